package plan

// ReadOnly is readOnly, for tests.
var ReadOnly = readOnly
