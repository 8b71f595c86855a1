package fcgi

import (
	"encoding/binary"
	"fmt"
)

// BeginRequest is the body of a BEGIN_REQUEST record.
type BeginRequest struct {
	Role  Role
	Flags uint8
}

// KeepConn reports whether the client asked to keep the connection open.
func (b BeginRequest) KeepConn() bool { return b.Flags&FlagKeepConn != 0 }

func (b BeginRequest) put(p []byte) {
	binary.BigEndian.PutUint16(p[0:2], uint16(b.Role))
	p[2] = b.Flags
	clear(p[3:8])
}

// ParseBeginRequest decodes the content of a BEGIN_REQUEST record.
func ParseBeginRequest(content []byte) (BeginRequest, error) {
	if len(content) < 8 {
		return BeginRequest{}, fmt.Errorf("fcgi: BEGIN_REQUEST body has %d bytes, want 8", len(content))
	}
	return BeginRequest{Role: Role(binary.BigEndian.Uint16(content[0:2])), Flags: content[2]}, nil
}

// EndRequest is the body of an END_REQUEST record.
type EndRequest struct {
	AppStatus      uint32
	ProtocolStatus ProtocolStatus
}

func (e EndRequest) put(p []byte) {
	binary.BigEndian.PutUint32(p[0:4], e.AppStatus)
	p[4] = byte(e.ProtocolStatus)
	clear(p[5:8])
}

// ParseEndRequest decodes the content of an END_REQUEST record.
func ParseEndRequest(content []byte) (EndRequest, error) {
	if len(content) < 8 {
		return EndRequest{}, fmt.Errorf("fcgi: END_REQUEST body has %d bytes, want 8", len(content))
	}
	return EndRequest{AppStatus: binary.BigEndian.Uint32(content[0:4]), ProtocolStatus: ProtocolStatus(content[4])}, nil
}
