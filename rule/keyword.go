package rule

// keywordAutomaton finds every keyword contained in a domain in one pass
// over it (Aho–Corasick, as a DFA over the bytes that occur in keywords):
// a domain of n bytes costs n table lookups, however many keywords there
// are.
type keywordAutomaton struct {
	class [256]uint8 // byte → column; 0 for bytes in no keyword
	cols  int
	next  []int32   // next[state*cols+class]: the DFA
	out   [][]int32 // keyword indices (into Set.keywords) ending at a state
}

func buildKeywords(keywords []keywordRules) *keywordAutomaton {
	a := &keywordAutomaton{cols: 1}
	for _, k := range keywords {
		for i := 0; i < len(k.keyword); i++ {
			if c := k.keyword[i]; a.class[c] == 0 {
				a.class[c] = uint8(a.cols)
				a.cols++
			}
		}
	}
	// The trie: goto edges, -1 where there is none.
	trie := [][]int32{a.row()}
	a.out = [][]int32{nil}
	for ki, k := range keywords {
		s := int32(0)
		for i := 0; i < len(k.keyword); i++ {
			c := a.class[k.keyword[i]]
			if trie[s][c] < 0 {
				trie[s][c] = int32(len(trie))
				trie = append(trie, a.row())
				a.out = append(a.out, nil)
			}
			s = trie[s][c]
		}
		a.out[s] = append(a.out[s], int32(ki))
	}
	// Breadth first: each state's failure state is complete before its
	// children's, so its edges and outputs can be inherited.
	a.next = make([]int32, len(trie)*a.cols)
	fail := make([]int32, len(trie))
	queue := []int32{}
	for c := range a.cols {
		if t := trie[0][c]; t > 0 {
			a.next[c] = t
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		a.out[s] = append(a.out[s], a.out[fail[s]]...)
		for c := range a.cols {
			t := trie[s][c]
			if t < 0 {
				a.next[int(s)*a.cols+c] = a.next[int(fail[s])*a.cols+c]
				continue
			}
			fail[t] = a.next[int(fail[s])*a.cols+c]
			a.next[int(s)*a.cols+c] = t
			queue = append(queue, t)
		}
	}
	return a
}

func (a *keywordAutomaton) row() []int32 {
	r := make([]int32, a.cols)
	for i := range r {
		r[i] = -1
	}
	return r
}
