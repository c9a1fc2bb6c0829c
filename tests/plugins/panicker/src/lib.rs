//! Panics in the request phase, or with `in: response` in the response phase, or with
//! `in: chunk` on a streamed chunk that is exactly `b` (mid-stream, for the tests'
//! upstream that streams `a`, `b`, `c`), or with `in: configure` while it is
//! configured (at load).
use sluice_plugin_sdk::{Decision, Phases, Plugin, Request, Response, export};

#[derive(serde::Deserialize, Default, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Where {
    #[default]
    Request,
    Response,
    Chunk,
    Configure,
}

#[derive(serde::Deserialize)]
struct Panicker {
    #[serde(default, rename = "in")]
    place: Where,
}

impl Plugin for Panicker {
    const PHASES: Phases = Phases::REQUEST;

    fn init(&mut self) -> Result<(), String> {
        if self.place == Where::Configure {
            panic!("boom while configuring");
        }
        Ok(())
    }

    fn phases(&self) -> Phases {
        match self.place {
            Where::Request | Where::Configure => Phases::REQUEST,
            Where::Response => Phases::RESPONSE,
            Where::Chunk => Phases::RESPONSE_CHUNK,
        }
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        panic!("boom on {}", req.path());
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        panic!("boom on a {} response", resp.status());
    }

    fn on_response_chunk(&self, chunk: Vec<u8>, _last: bool) -> Vec<u8> {
        if chunk == b"b" {
            panic!("boom mid-stream");
        }
        chunk
    }
}

export!(Panicker);
