package iopoll

// list is an intrusive doubly linked list of Requests threaded through
// Request.next and Request.prev, so moving a request between lists never
// allocates. The zero value is an empty list.
type list struct {
	head, tail *Request
	n          int
}

func (l *list) empty() bool { return l.head == nil }

func (l *list) pushBack(r *Request) {
	r.next, r.prev = nil, l.tail
	if l.tail == nil {
		l.head = r
	} else {
		l.tail.next = r
	}
	l.tail = r
	l.n++
}

func (l *list) pushFront(r *Request) {
	r.prev, r.next = nil, l.head
	if l.head == nil {
		l.tail = r
	} else {
		l.head.prev = r
	}
	l.head = r
	l.n++
}

// remove unlinks r, which must be on l.
func (l *list) remove(r *Request) {
	if r.prev == nil {
		l.head = r.next
	} else {
		r.prev.next = r.next
	}
	if r.next == nil {
		l.tail = r.prev
	} else {
		r.next.prev = r.prev
	}
	r.next, r.prev = nil, nil
	l.n--
}

// popFront unlinks and returns the first request, or nil.
func (l *list) popFront() *Request {
	r := l.head
	if r != nil {
		l.remove(r)
	}
	return r
}

// take moves every request out of l into a new list value (list_splice_init).
func (l *list) take() list {
	t := *l
	*l = list{}
	return t
}
