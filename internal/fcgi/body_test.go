package fcgi

import (
	"bytes"
	"strings"
	"testing"
)

func TestBeginRequestByteTable(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want BeginRequest
		keep bool
	}{
		{"responder", []byte{0, 1, 0, 0, 0, 0, 0, 0}, BeginRequest{Role: RoleResponder}, false},
		{"responder keep-conn", []byte{0, 1, 1, 0, 0, 0, 0, 0}, BeginRequest{Role: RoleResponder, Flags: 1}, true},
		{"authorizer", []byte{0, 2, 0, 0, 0, 0, 0, 0}, BeginRequest{Role: RoleAuthorizer}, false},
		{"filter keep-conn", []byte{0, 3, 1, 0, 0, 0, 0, 0}, BeginRequest{Role: RoleFilter, Flags: 1}, true},
		{"unknown role", []byte{0x12, 0x34, 0, 0, 0, 0, 0, 0}, BeginRequest{Role: 0x1234}, false},
		{"other flag bits", []byte{0, 1, 0xFE, 0, 0, 0, 0, 0}, BeginRequest{Role: RoleResponder, Flags: 0xFE}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBeginRequest(tt.body)
			if err != nil {
				t.Fatalf("ParseBeginRequest: %v", err)
			}
			if got != tt.want {
				t.Errorf("decoded %+v, want %+v", got, tt.want)
			}
			if got.KeepConn() != tt.keep {
				t.Errorf("KeepConn = %v, want %v", got.KeepConn(), tt.keep)
			}

			var out bytes.Buffer
			w := NewWriter(&out)
			if err := w.WriteBeginRequest(0x0102, tt.want); err != nil {
				t.Fatal(err)
			}
			w.Flush()
			if want := makeRecord(1, 0x0102, tt.body, 0); !bytes.Equal(out.Bytes(), want) {
				t.Errorf("encoded % x, want % x", out.Bytes(), want)
			}
		})
	}
}

func TestEndRequestByteTable(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want EndRequest
	}{
		{"complete", []byte{0, 0, 0, 0, 0, 0, 0, 0}, EndRequest{}},
		{"app status 255", []byte{0, 0, 0, 0xFF, 0, 0, 0, 0}, EndRequest{AppStatus: 255}},
		{"app status big endian", []byte{0x01, 0x02, 0x03, 0x04, 0, 0, 0, 0}, EndRequest{AppStatus: 0x01020304}},
		{"max app status", []byte{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0}, EndRequest{AppStatus: 0xFFFFFFFF}},
		{"cant mpx", []byte{0, 0, 0, 0, 1, 0, 0, 0}, EndRequest{ProtocolStatus: StatusCantMPXConn}},
		{"overloaded", []byte{0, 0, 0, 0, 2, 0, 0, 0}, EndRequest{ProtocolStatus: StatusOverloaded}},
		{"unknown role", []byte{0, 0, 0, 1, 3, 0, 0, 0}, EndRequest{AppStatus: 1, ProtocolStatus: StatusUnknownRole}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEndRequest(tt.body)
			if err != nil {
				t.Fatalf("ParseEndRequest: %v", err)
			}
			if got != tt.want {
				t.Errorf("decoded %+v, want %+v", got, tt.want)
			}
			var out bytes.Buffer
			w := NewWriter(&out)
			if err := w.WriteEndRequest(7, tt.want); err != nil {
				t.Fatal(err)
			}
			w.Flush()
			if want := makeRecord(3, 7, tt.body, 0); !bytes.Equal(out.Bytes(), want) {
				t.Errorf("encoded % x, want % x", out.Bytes(), want)
			}
		})
	}
}

func TestBodiesIgnoreReservedBytes(t *testing.T) {
	b, err := ParseBeginRequest([]byte{0, 1, 1, 9, 9, 9, 9, 9})
	if err != nil || b != (BeginRequest{Role: RoleResponder, Flags: 1}) {
		t.Errorf("ParseBeginRequest with reserved bytes set = %+v, %v", b, err)
	}
	e, err := ParseEndRequest([]byte{0, 0, 0, 2, 0, 9, 9, 9})
	if err != nil || e != (EndRequest{AppStatus: 2}) {
		t.Errorf("ParseEndRequest with reserved bytes set = %+v, %v", e, err)
	}
}

func TestShortBodiesRejected(t *testing.T) {
	for n := 0; n < 8; n++ {
		body := make([]byte, n)
		if _, err := ParseBeginRequest(body); err == nil {
			t.Errorf("ParseBeginRequest of %d bytes succeeded", n)
		} else if !strings.Contains(err.Error(), "BEGIN_REQUEST") {
			t.Errorf("error %q does not name the record", err)
		}
		if _, err := ParseEndRequest(body); err == nil {
			t.Errorf("ParseEndRequest of %d bytes succeeded", n)
		} else if !strings.Contains(err.Error(), "END_REQUEST") {
			t.Errorf("error %q does not name the record", err)
		}
	}
}
