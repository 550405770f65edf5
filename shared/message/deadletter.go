package message

// The dead-letter queue's schema: a dead letter is the row's message, as
// it was received, with these attributes saying why it failed. The worker
// writes them; the operators' tools (worker dlq) read them.
const (
	AttrErrorCode    = "error_code"    // one of the codes of the README's table (register's, or the ones below)
	AttrErrorMessage = "error_message" // why, masked and bounded
	AttrAttempts     = "attempts"      // receives of the message when it failed
	AttrFailedAt     = "failed_at"     // RFC 3339, UTC
	AttrJob          = "job"           // the row's job, when the body names one
	AttrRow          = "row"           // the row's number, when the body names one
	// AttrReplayPass marks a message a replay moved, with the pass's id; a
	// dead letter keeps it, so that the pass never moves it twice.
	AttrReplayPass = "replay_pass"
)

// Codes of failures decided from the message itself.
const (
	CodeMalformedMessage = "MALFORMED_MESSAGE" // the body is not a valid message
	CodeUnknownRow       = "UNKNOWN_ROW"       // no such job and row recorded
	CodeMessageMismatch  = "MESSAGE_MISMATCH"  // the body disagrees with the recorded row
	// CodeRedriven names dead letters without an error code: SQS moved
	// them after maxReceiveCount receives, when a worker died on every
	// attempt.
	CodeRedriven = "REDRIVEN"
)

// OwnsRow reports whether a dead letter with this code stands for its
// recorded row's failure (a message that names no recorded row, or
// disagrees with it, does not).
func OwnsRow(code string) bool {
	return code != CodeUnknownRow && code != CodeMessageMismatch && code != CodeMalformedMessage
}
