package queue

// DoorbellFunc adapts a function to the Doorbell interface, for controller
// models and tests that want to see every doorbell write.
type DoorbellFunc func(v uint32)

// Ring calls f(v).
func (f DoorbellFunc) Ring(v uint32) { f(v) }
