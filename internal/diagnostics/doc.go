// Package diagnostics turns what happened to a request (an outcome.Trace)
// into an explanation: the cause catalogue (causes.go), the classifier that
// picks a cause and gathers evidence (classify.go and the files it calls),
// the one step that explains each request once and hands the result on
// (explain.go), the error responses (render.go) and the access log.
package diagnostics
