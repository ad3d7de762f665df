//! Model tests: fed by fake sources, checked against a fake datapath.
