package process

// UsageError marks an error in how the command was called (exit status 2).
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }

// Unwrap lets errors.Is see the cause of a usage error.
func (e UsageError) Unwrap() error { return e.Err }
