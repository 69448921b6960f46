package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// session is what a successful handshake agreed on.
type session struct {
	export     *Export
	size       int64
	flags      uint16 // transmission flags sent to the client
	structured bool   // NBD_OPT_STRUCTURED_REPLY was acknowledged
	minBlock   uint32
	prefBlock  uint32
	maxPayload uint32
}

// errClientAbort ends a handshake the client ended with NBD_OPT_ABORT.
var errClientAbort = errors.New("nbd: client sent NBD_OPT_ABORT")

// handshake runs the fixed newstyle negotiation (proto.md "Handshake") up
// to the transmission phase. Every option's data is read in full before
// it is answered, so an unsupported or malformed option leaves the stream
// in sync for the next one.
func (s *Server) handshake(br *bufio.Reader, bw *bufio.Writer) (*session, error) {
	var greet [18]byte
	binary.BigEndian.PutUint64(greet[0:], magicOldstyle)
	binary.BigEndian.PutUint64(greet[8:], magicOption)
	binary.BigEndian.PutUint16(greet[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := bw.Write(greet[:]); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(br, cf[:]); err != nil {
		return nil, fmt.Errorf("nbd: reading client flags: %w", err)
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&^clientFlagsKnown != 0 {
		return nil, fmt.Errorf("nbd: client flags %#x has unknown bits", clientFlags)
	}
	noZeroes := clientFlags&clientFlagNoZeroes != 0
	structured := false

	for {
		var hdr [optionHeaderSize]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return nil, fmt.Errorf("nbd: reading option header: %w", err)
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicOption {
			return nil, fmt.Errorf("nbd: bad option magic %#x", m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		length := binary.BigEndian.Uint32(hdr[12:])
		if length > maxOptionLength {
			// Drain what the client sends so the refusal can be read.
			if _, err := io.CopyN(io.Discard, br, int64(length)); err != nil {
				return nil, fmt.Errorf("nbd: discarding oversized option %d: %w", opt, err)
			}
			if opt == optExportName {
				return nil, fmt.Errorf("nbd: export name of %d bytes", length)
			}
			if err := writeOptReply(bw, opt, repErrTooBig, "option data too large"); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, fmt.Errorf("nbd: reading option %d data: %w", opt, err)
		}

		switch opt {
		case optExportName:
			exp, err := s.catalog.Lookup(string(data))
			if err != nil {
				// NBD_OPT_EXPORT_NAME cannot carry an error: hard disconnect.
				return nil, fmt.Errorf("nbd: export %q: %w", data, err)
			}
			sess := s.newSession(exp, structured)
			var rep [10 + exportNameZeroPadding]byte
			binary.BigEndian.PutUint64(rep[0:], uint64(sess.size))
			binary.BigEndian.PutUint16(rep[8:], sess.flags)
			n := len(rep)
			if noZeroes {
				n = 10
			}
			if _, err := bw.Write(rep[:n]); err != nil {
				return nil, err
			}
			return sess, bw.Flush()

		case optAbort:
			_ = writeOptReply(bw, opt, repAck, "")
			return nil, errClientAbort

		case optList:
			if len(data) != 0 {
				if err := writeOptReply(bw, opt, repErrInvalid, "NBD_OPT_LIST takes no data"); err != nil {
					return nil, err
				}
				continue
			}
			for _, e := range s.catalog.List() {
				payload := make([]byte, 4+len(e.Name)+len(e.Description))
				binary.BigEndian.PutUint32(payload, uint32(len(e.Name)))
				copy(payload[4:], e.Name)
				copy(payload[4+len(e.Name):], e.Description)
				if err := writeOptReplyBytes(bw, opt, repServer, payload); err != nil {
					return nil, err
				}
			}
			if err := writeOptReply(bw, opt, repAck, ""); err != nil {
				return nil, err
			}

		case optStructuredReply:
			if len(data) != 0 {
				if err := writeOptReply(bw, opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data"); err != nil {
					return nil, err
				}
				continue
			}
			structured = true
			if err := writeOptReply(bw, opt, repAck, ""); err != nil {
				return nil, err
			}

		case optInfo, optGo:
			sess, err := s.infoOrGo(bw, opt, data, structured)
			if err != nil {
				return nil, err
			}
			if sess != nil && opt == optGo {
				return sess, nil
			}

		default:
			// NBD_OPT_STARTTLS, metadata contexts, extended headers and
			// anything unknown.
			msg := fmt.Sprintf("option %d is not supported by twinblock", opt)
			if err := writeOptReply(bw, opt, repErrUnsup, msg); err != nil {
				return nil, err
			}
		}
	}
}

// infoOrGo answers NBD_OPT_INFO and NBD_OPT_GO. It returns a session when
// the export was accepted, nil (and no error) when an error reply was sent.
func (s *Server) infoOrGo(bw *bufio.Writer, opt uint32, data []byte, structured bool) (*session, error) {
	if len(data) < 6 {
		return nil, writeOptReply(bw, opt, repErrInvalid, "option data shorter than 6 bytes")
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen) > uint64(len(data)-6) {
		return nil, writeOptReply(bw, opt, repErrInvalid, "export name length exceeds option data")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nInfo := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*nInfo {
		return nil, writeOptReply(bw, opt, repErrInvalid,
			fmt.Sprintf("%d information requests do not match option length %d", nInfo, len(data)))
	}
	exp, err := s.catalog.Lookup(name)
	if errors.Is(err, ErrUnknownExport) {
		return nil, writeOptReply(bw, opt, repErrUnknown, fmt.Sprintf("no export named %q", name))
	}
	if err != nil {
		return nil, writeOptReply(bw, opt, repErrPolicy, err.Error())
	}
	sess := s.newSession(exp, structured)

	var info [14]byte
	binary.BigEndian.PutUint16(info[0:], infoExport)
	binary.BigEndian.PutUint64(info[2:], uint64(sess.size))
	binary.BigEndian.PutUint16(info[10:], sess.flags)
	if err := writeOptReplyBytes(bw, opt, repInfo, info[:12]); err != nil {
		return nil, err
	}
	// Block sizes are always sent: a client that did not ask may ignore
	// them, and one that uses O_DIRECT-aligned exports needs them.
	binary.BigEndian.PutUint16(info[0:], infoBlockSize)
	binary.BigEndian.PutUint32(info[2:], sess.minBlock)
	binary.BigEndian.PutUint32(info[6:], sess.prefBlock)
	binary.BigEndian.PutUint32(info[10:], sess.maxPayload)
	if err := writeOptReplyBytes(bw, opt, repInfo, info[:14]); err != nil {
		return nil, err
	}
	for i := 0; i < nInfo; i++ {
		var payload []byte
		switch binary.BigEndian.Uint16(rest[2+2*i:]) {
		case infoName:
			payload = binary.BigEndian.AppendUint16(nil, infoName)
			payload = append(payload, exp.Name...)
		case infoDescription:
			if exp.Description == "" {
				continue
			}
			payload = binary.BigEndian.AppendUint16(nil, infoDescription)
			payload = append(payload, exp.Description...)
		default:
			continue // NBD_INFO_EXPORT and BLOCK_SIZE went above; unknown ones are ignored
		}
		if err := writeOptReplyBytes(bw, opt, repInfo, payload); err != nil {
			return nil, err
		}
	}
	if err := writeOptReply(bw, opt, repAck, ""); err != nil {
		return nil, err
	}
	return sess, nil
}

func (s *Server) newSession(exp *Export, structured bool) *session {
	sess := &session{
		export:     exp,
		size:       exp.Device.Size(),
		structured: structured,
		minBlock:   defaultMinBlock,
		prefBlock:  defaultPreferredBlock,
		maxPayload: s.opts.MaxPayload,
	}
	if bs, ok := exp.Device.(BlockSizer); ok {
		if m := bs.MinBlockSize(); m > 1 && m <= maxAdvertisedMinBlock && m&(m-1) == 0 {
			sess.minBlock = uint32(m)
		}
	}
	if sess.prefBlock < sess.minBlock {
		sess.prefBlock = sess.minBlock
	}
	if sess.maxPayload < sess.prefBlock { // proto.md: max >= preferred
		sess.maxPayload = sess.prefBlock
	}
	sess.flags = FlagHasFlags | FlagSendFlush | FlagCanMultiConn
	if exp.readOnly() {
		sess.flags |= FlagReadOnly
	} else {
		sess.flags |= FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes
	}
	if structured {
		sess.flags |= FlagSendDF
	}
	return sess
}

func writeOptReply(bw *bufio.Writer, opt, typ uint32, msg string) error {
	return writeOptReplyBytes(bw, opt, typ, []byte(msg))
}

func writeOptReplyBytes(bw *bufio.Writer, opt, typ uint32, payload []byte) error {
	var hdr [optionReplyHeaderSize]byte
	binary.BigEndian.PutUint64(hdr[0:], magicOptReply)
	binary.BigEndian.PutUint32(hdr[8:], opt)
	binary.BigEndian.PutUint32(hdr[12:], typ)
	binary.BigEndian.PutUint32(hdr[16:], uint32(len(payload)))
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := bw.Write(payload); err != nil {
		return err
	}
	return bw.Flush()
}
