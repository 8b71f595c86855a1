// Package fcgi implements the FastCGI wire protocol as a relay needs it:
// record headers, a record reader that does not allocate per record, a
// record writer that frames streams, name-value pairs, the BEGIN_REQUEST and
// END_REQUEST bodies, addresses in nginx's fastcgi_pass syntax and a small
// client for probes and tests.
//
// The package knows nothing of nginx, php-fpm or diagnosis.
package fcgi

import "fmt"

// version1 is the only FastCGI protocol version.
const version1 = 1

// HeaderLen is the size of a record header.
const HeaderLen = 8

// maxContent is the largest content length the header can express.
const maxContent = 65535

// MaxWriteContent is the largest content the Writer puts in one record. It is
// a multiple of 8 so that content plus padding never exceeds 65535: php-fpm
// rejects records whose content and padding together exceed that.
const MaxWriteContent = 65528

// RecordType is the type byte of a record header.
type RecordType uint8

// The record types of FastCGI 1.0.
const (
	TypeBeginRequest    RecordType = 1
	TypeAbortRequest    RecordType = 2
	TypeEndRequest      RecordType = 3
	TypeParams          RecordType = 4
	TypeStdin           RecordType = 5
	TypeStdout          RecordType = 6
	TypeStderr          RecordType = 7
	TypeData            RecordType = 8
	TypeGetValues       RecordType = 9
	TypeGetValuesResult RecordType = 10
	TypeUnknownType     RecordType = 11
)

var typeNames = [...]string{
	TypeBeginRequest:    "BEGIN_REQUEST",
	TypeAbortRequest:    "ABORT_REQUEST",
	TypeEndRequest:      "END_REQUEST",
	TypeParams:          "PARAMS",
	TypeStdin:           "STDIN",
	TypeStdout:          "STDOUT",
	TypeStderr:          "STDERR",
	TypeData:            "DATA",
	TypeGetValues:       "GET_VALUES",
	TypeGetValuesResult: "GET_VALUES_RESULT",
	TypeUnknownType:     "UNKNOWN_TYPE",
}

// String returns the name the specification gives the type, or
// "type(N)" for a type it does not define.
func (t RecordType) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// known reports whether the specification defines t.
func (t RecordType) known() bool {
	return t >= TypeBeginRequest && t <= TypeUnknownType
}

// management reports whether records of type t belong to the connection
// rather than to a request (request id 0).
func (t RecordType) management() bool {
	return t == TypeGetValues || t == TypeGetValuesResult || t == TypeUnknownType
}

// Role is the role requested in BEGIN_REQUEST.
type Role uint16

// The roles of FastCGI 1.0.
const (
	RoleResponder  Role = 1
	RoleAuthorizer Role = 2
	RoleFilter     Role = 3
)

// String returns the role's name.
func (r Role) String() string {
	switch r {
	case RoleResponder:
		return "RESPONDER"
	case RoleAuthorizer:
		return "AUTHORIZER"
	case RoleFilter:
		return "FILTER"
	}
	return fmt.Sprintf("role(%d)", uint16(r))
}

// FlagKeepConn in BEGIN_REQUEST asks the application to keep the connection
// open after the request ends.
const FlagKeepConn = 1

// ProtocolStatus is the protocol status of END_REQUEST.
type ProtocolStatus uint8

// The protocol statuses of FastCGI 1.0.
const (
	StatusRequestComplete ProtocolStatus = 0
	StatusCantMPXConn     ProtocolStatus = 1
	StatusOverloaded      ProtocolStatus = 2
	StatusUnknownRole     ProtocolStatus = 3
)

// String returns the status's name.
func (s ProtocolStatus) String() string {
	switch s {
	case StatusRequestComplete:
		return "REQUEST_COMPLETE"
	case StatusCantMPXConn:
		return "CANT_MPX_CONN"
	case StatusOverloaded:
		return "OVERLOADED"
	case StatusUnknownRole:
		return "UNKNOWN_ROLE"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Names of the variables a GET_VALUES record may ask for.
const (
	ValueMaxConns  = "FCGI_MAX_CONNS"
	ValueMaxReqs   = "FCGI_MAX_REQS"
	ValueMPXSConns = "FCGI_MPXS_CONNS"
)

// Names that fcgiscope's relay adds to every GET_VALUES_RESULT, asked for or
// not. They are no part of FastCGI: they tell a probe that it reached
// fcgiscope, where fcgiscope relays to and which limits it applies, so that
// fcgiscope doctor can follow the chain from nginx to php-fpm. A probe only
// reads them and never asks: some php-fpm versions spin on a name they do
// not know.
const (
	ValueRelayUpstream       = "FCGISCOPE_UPSTREAM"
	ValueRelayReadTimeout    = "FCGISCOPE_READ_TIMEOUT"  // a Go duration; 0s is none
	ValueRelayQueueTimeout   = "FCGISCOPE_QUEUE_TIMEOUT" // a Go duration, or "auto": as long as the web server waits
	ValueRelayMaxHeaderBytes = "FCGISCOPE_MAX_HEADER_BYTES"
)
