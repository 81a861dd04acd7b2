package netns

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. The HTTP layer maps them with errors.Is.
var (
	// ErrNamespaceAbsent: the data-plane namespace does not exist (reads
	// never create it).
	ErrNamespaceAbsent = errors.New("network namespace does not exist")

	// ErrInterfaceExists: POST /1.0/plug/vip for a MAC that is already in
	// the namespace (409 {"message":"Interface already exists"}).
	ErrInterfaceExists = errors.New("interface already exists")

	// ErrNoInterface: no NIC with the requested MAC, neither in the
	// namespace nor in the root namespace (404
	// {"details":"No suitable network interface found"}; the controller
	// retries exactly this answer while Nova finishes the hot-plug).
	ErrNoInterface = errors.New("no suitable network interface found")

	// ErrAddressNotFound: no interface in the namespace holds the address
	// (404 {"message":"Error interface not found for IP address"}).
	ErrAddressNotFound = errors.New("interface not found for IP address")
)

// Texts of the API answers, shared with the HTTP layer.
const (
	MsgInterfaceExists   = "Interface already exists"
	MsgNoInterface       = "No suitable network interface found"
	MsgInvalidIP         = "Invalid IP address"
	MsgAddressNotFound   = "Error interface not found for IP address"
	MsgInvalidSubnetInfo = "Invalid subnet information"
	MsgInvalidPortInfo   = "Invalid port information"
	MsgInvalidRulesInfo  = "Invalid rules information"
	MsgInvalidNetPort    = "Invalid network port"
	MsgPlugVIPFailed     = "Error plugging VIP"
	MsgPlugNetFailed     = "Error plugging network"
	MsgPlugVIPNetFailed  = "Error plugging vip" // update path with vip_net_info (lower case in the reference)
)

// BadRequestError is a request the agent refuses with 400.
//
// Generic errors are answered with the framework-style body
// {"error":"400 Bad Request: <Message>","http_code":400}; the others with
// {"message":"<Message>"}.
type BadRequestError struct {
	Message string
	Generic bool
	Err     error // the underlying problem, for logs; may be nil
}

func (e *BadRequestError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("bad request: %s: %v", e.Message, e.Err)
	}
	return "bad request: " + e.Message
}

func (e *BadRequestError) Unwrap() error { return e.Err }

func genericBadRequest(msg string, format string, args ...any) *BadRequestError {
	return &BadRequestError{Message: msg, Generic: true, Err: fmt.Errorf(format, args...)}
}

// PlugError reports that the NIC was found but could not be configured
// (500 {"message":"<Message>","details":"<Details>"}).
type PlugError struct {
	Message string // MsgPlugVIPFailed, MsgPlugNetFailed or MsgPlugVIPNetFailed
	Details string // what failed, shown to the controller
	Err     error
}

func (e *PlugError) Error() string {
	return fmt.Sprintf("%s: %s", strings.ToLower(e.Message), e.Details)
}

func (e *PlugError) Unwrap() error { return e.Err }

// InterfaceError collects the per-interface failures of Up or Down, with
// the reference's texts: Error() is
// "Could not configure interface: Error on action 'up' for interface eth1: <err>., ..."
// (the amphora-interface command prints "Error: " + Error() and exits 2).
type InterfaceError struct {
	Action string
	// NotFound is set when the requested interface has no file
	// ("Could not find interface '<name>'.").
	NotFound string
	Failures []InterfaceFailure
}

// InterfaceFailure is the failure of one interface.
type InterfaceFailure struct {
	Interface string
	Err       error
}

func (e *InterfaceError) Error() string {
	if e.NotFound != "" {
		return fmt.Sprintf("Could not configure interface: Could not find interface '%s'.", e.NotFound)
	}
	parts := make([]string, 0, len(e.Failures))
	for _, f := range e.Failures {
		parts = append(parts, fmt.Sprintf("Error on action '%s' for interface %s: %v.", e.Action, f.Interface, f.Err))
	}
	return "Could not configure interface: " + strings.Join(parts, ", ")
}

func (e *InterfaceError) Unwrap() []error {
	errs := make([]error, 0, len(e.Failures))
	for _, f := range e.Failures {
		errs = append(errs, f.Err)
	}
	return errs
}
