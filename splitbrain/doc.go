// Package splitbrain will hold the generation-identifier comparison (DRBD
// 8.4's rules) and the after-sb recovery policies, as pure functions. Not
// implemented yet: it arrives with issues 5 and 6. Nothing imports it today.
package splitbrain
