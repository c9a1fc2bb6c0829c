//! Golden tests: invalid configs and the exact errors they produce.
