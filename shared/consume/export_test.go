package consume

// ReceiveRetry exposes the receive loop's schedule to the tests.
var ReceiveRetry = receiveRetry
