package tcp

// hasOutOfOrder reports whether data beyond RCV.NXT is queued: the engine
// then answers every segment at once instead of coalescing ACKs.
func (t *TCB) hasOutOfOrder() bool { return t.ooo != nil && t.ooo.count() > 0 }
