package diagnostics

// Diagnosis is the explanation of one request's outcome.
type Diagnosis struct {
	Cause *Cause
	// Status, when set, is the cause's AltStatus, which applies to this
	// request; StatusCode says which status the request gets.
	Status int
	// Detail is one or two sentences with the measured numbers.
	Detail string
	// Hints name concrete changes, most likely first.
	Hints []string
	// Evidence holds the facts the diagnosis rests on.
	Evidence map[string]string
	// FPMPid is the php-fpm worker's pid, when known.
	FPMPid int
}

// StatusCode returns the HTTP status the diagnosis gives the request.
func (d *Diagnosis) StatusCode() int {
	if d.Status != 0 {
		return d.Status
	}
	return d.Cause.Status
}
