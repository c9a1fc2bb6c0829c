//! Returns invalid answers. First it tries an invalid header and checks that the
//! host reported it as an error (not a trap); then it answers with `mode`:
//! `status` (status 42) or `header` (a header name with a space).
use sluice_plugin_sdk::{Decision, HeaderError, Phases, Plugin, Request, export};

#[derive(serde::Deserialize)]
struct Garbage {
    mode: String,
}

impl Plugin for Garbage {
    const PHASES: Phases = Phases::REQUEST;

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        assert_eq!(req.set_header("bad name", "x"), Err(HeaderError::InvalidName));
        assert_eq!(req.set_header("x-ok", "bad\nvalue"), Err(HeaderError::InvalidValue));
        assert_eq!(req.set_header("content-length", "1"), Err(HeaderError::Forbidden));
        match self.mode.as_str() {
            "status" => Decision::respond(42, "nope"),
            "header" => Decision::respond(200, "nope").with_header("bad header", "x"),
            _ => Decision::Continue,
        }
    }
}

export!(Garbage);
