//! Runs whatever sequence of host calls the request asks for, to drive the host API
//! with arbitrary call sequences (the fuzz test) and with floods (the output bounds).
//!
//! The request phase runs the script in the `x-script` header; the response phase
//! runs the one in `x-script-response` (kept in the request's context). A script is
//! `;`-separated ops, each `op arg…` separated by spaces, with an optional `*N` to
//! repeat it (`{i}` in an argument is the repetition's index). Arguments are
//! percent-decoded, so any string can be passed. Host errors are ignored: what is
//! tested is what the host does with the calls, not what the plugin does with errors.
//!
//! Ops on both phases: `sh N V` set header, `ah N V` append, `rh N` remove, `gh N`
//! read one, `ga` read all, `gb` read the body, `sb LEN` set a body of LEN bytes,
//! `sbs S` set the body to S, `gc K` read the context, `an K V` annotate, `rs STATUS
//! BODY` answer, `rsh N` answer with N headers, `panic`, `stale N` call a `request`
//! method through handle N, which this call was not given. Request only: `sp PATH`,
//! `su NAME`, `sc NAME`, `cc`, `cx K V`, `es N V`, `ea N V`, `er N`, `kg K`, `ks K V`,
//! `ki K`, `kd K`, `id`, `ip`, `pp`. Response only: `st STATUS`.
use sluice_plugin_sdk::{Consumer, Decision, Phases, Plugin, Request, Response, kv, log};

#[derive(serde::Deserialize)]
struct Scripted {}

struct Op {
    name: String,
    args: Vec<String>,
    times: usize,
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse(script: &str) -> Vec<Op> {
    script
        .split(';')
        .filter_map(|op| {
            let mut words: Vec<&str> = op.split(' ').filter(|w| !w.is_empty()).collect();
            let times = match words.last().and_then(|w| w.strip_prefix('*')) {
                Some(n) => {
                    let n = n.parse().unwrap_or(1);
                    words.pop();
                    n
                }
                None => 1,
            };
            let (name, args) = words.split_first()?;
            Some(Op { name: (*name).to_owned(), args: args.iter().map(|a| decode(a)).collect(), times })
        })
        .collect()
}

impl Op {
    fn arg(&self, k: usize, i: usize) -> String {
        self.args.get(k).map_or_else(String::new, |a| a.replace("{i}", &i.to_string()))
    }

    fn num(&self, k: usize, i: usize) -> u64 {
        self.arg(k, i).parse().unwrap_or(0)
    }

    /// An answer, when the op is one.
    fn answer(&self, i: usize) -> Option<Decision> {
        match self.name.as_str() {
            "rs" => Some(Decision::respond(self.num(0, i) as u16, self.arg(1, i))),
            "rsh" => Some((0..self.num(0, i)).fold(Decision::respond(200, "many"), |d, h| {
                d.with_header(format!("x-h-{h}"), "v")
            })),
            "panic" => panic!("scripted panic"),
            _ => None,
        }
    }
}

/// Runs `script`; the first answer ends it.
/// Reads a header through the `request` resource handle `n`, made up by the plugin
/// rather than given to it by this call: a stale or forged handle, which the host
/// must refuse (a trap), however it was come by.
#[allow(unsafe_code)]
fn stale(n: u64) -> bool {
    use sluice_plugin_sdk::bindings::sluice::plugin::types::Request as Handle;
    // SAFETY: none, on purpose: the handle is forged, and the component model's
    // handle table must catch it.
    let forged = unsafe { Handle::from_handle(n as u32) };
    let seen = forged.header("x-script").is_some();
    std::mem::forget(forged);
    seen
}

fn run(script: &str, mut each: impl FnMut(&Op, usize)) -> Decision {
    for op in parse(script) {
        for i in 0..op.times {
            if let Some(d) = op.answer(i) {
                return d;
            }
            each(&op, i);
        }
    }
    Decision::Continue
}

impl Plugin for Scripted {
    const PHASES: Phases = Phases::REQUEST
        .union(Phases::REQUEST_BODY)
        .union(Phases::RESPONSE)
        .union(Phases::RESPONSE_BODY);

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if let Some(s) = req.header("x-script-response") {
            req.set_context("response", &s);
        }
        let script = req.header("x-script").unwrap_or_default();
        run(&script, |op, i| {
            let a = |k| op.arg(k, i);
            let _ = match op.name.as_str() {
                "sh" => req.set_header(&a(0), &a(1)).is_ok(),
                "ah" => req.append_header(&a(0), &a(1)).is_ok(),
                "rh" => req.remove_header(&a(0)).is_ok(),
                "gh" => req.header(&a(0)).is_some(),
                "ga" => !req.headers().is_empty(),
                "gb" => req.body().is_ok(),
                "sb" => req.set_body(&vec![b'x'; op.num(0, i) as usize]).is_ok(),
                "sbs" => req.set_body(a(0).as_bytes()).is_ok(),
                "gc" => req.context(&a(0)).is_some(),
                "an" => {
                    log::annotate(&a(0), &a(1));
                    true
                }
                "sp" => req.set_path(&a(0)).is_ok(),
                "su" => req.set_upstream(&a(0)).is_ok(),
                "sc" => {
                    req.set_consumer(Some(Consumer { name: a(0), groups: vec![a(1)] }));
                    true
                }
                "cc" => {
                    req.set_consumer(None);
                    true
                }
                "cx" => {
                    req.set_context(&a(0), &a(1));
                    true
                }
                "es" => req.set_response_header(&a(0), &a(1)).is_ok(),
                "ea" => req.append_response_header(&a(0), &a(1)).is_ok(),
                "er" => req.remove_response_header(&a(0)).is_ok(),
                "kg" => kv::get(&a(0)).is_ok(),
                "ks" => kv::set(&a(0), a(1).as_bytes(), None).is_ok(),
                "ki" => kv::increment(&a(0), 1, None).is_ok(),
                "kd" => kv::delete(&a(0)).is_ok(),
                "id" => !req.request_id().is_empty(),
                "ip" => !req.client_ip().is_empty(),
                "pp" => !req.path_params().is_empty(),
                "stale" => stale(op.num(0, i)),
                _ => false,
            };
        })
    }

    fn on_response(&self, resp: &mut Response<'_>) -> Decision {
        let script = resp.context("response").unwrap_or_default();
        run(&script, |op, i| {
            let a = |k| op.arg(k, i);
            let _ = match op.name.as_str() {
                "sh" => resp.set_header(&a(0), &a(1)).is_ok(),
                "ah" => resp.append_header(&a(0), &a(1)).is_ok(),
                "rh" => resp.remove_header(&a(0)).is_ok(),
                "gh" => resp.header(&a(0)).is_some(),
                "ga" => !resp.headers().is_empty(),
                "gb" => resp.body().is_ok(),
                "sb" => resp.set_body(&vec![b'x'; op.num(0, i) as usize]).is_ok(),
                "sbs" => resp.set_body(a(0).as_bytes()).is_ok(),
                "gc" => resp.context(&a(0)).is_some(),
                "an" => {
                    log::annotate(&a(0), &a(1));
                    true
                }
                "st" => resp.set_status(op.num(0, i) as u16).is_ok(),
                "stale" => stale(op.num(0, i)),
                _ => false,
            };
        })
    }
}

sluice_plugin_sdk::export!(Scripted);
