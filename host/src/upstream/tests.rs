//! Integration tests of the upstream layer against real hyper servers on 127.0.0.1:0.
