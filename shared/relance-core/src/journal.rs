//! Journal records (what happened to whom, when) and the counters per step and per end
//! that `relance journal` and `simulate --journal` print.
