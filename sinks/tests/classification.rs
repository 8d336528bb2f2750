//! The retry decision for every relevant HTTP status, per provider, written out.

use mcpulse_sinks::receivers::ReceiverKind::{self, Discord, OpsGenie, PagerDuty, Webhook};
use mcpulse_sinks::receivers::classify::{Decision, decide};

#[derive(Debug, PartialEq)]
enum Expect {
    Ok,
    Retry,
    Permanent,
}

const HTTP: [ReceiverKind; 4] = [PagerDuty, OpsGenie, Discord, Webhook];

#[test]
fn every_status_code_has_the_documented_decision() {
    use Expect::*;
    let table: &[(u16, Expect)] = &[
        (200, Ok),
        (201, Ok),
        (202, Ok),
        (204, Ok),
        (301, Permanent),
        (302, Permanent),
        (307, Permanent),
        (400, Permanent),
        (401, Permanent),
        (403, Permanent),
        (404, Permanent),
        (405, Permanent),
        (408, Retry),
        (409, Permanent),
        (410, Permanent),
        (413, Permanent),
        (415, Permanent),
        (422, Permanent),
        (429, Retry),
        (500, Retry),
        (501, Retry),
        (502, Retry),
        (503, Retry),
        (504, Retry),
        (599, Retry),
    ];
    for kind in HTTP {
        for (status, expect) in table {
            let got = match decide(kind, *status) {
                Decision::Delivered => Ok,
                Decision::Retry(_) => Retry,
                Decision::Permanent(_) => Permanent,
            };
            assert_eq!(&got, expect, "{} {status}", kind.as_str());
        }
    }
}

#[test]
fn discord_404_says_the_webhook_is_gone() {
    match decide(Discord, 404) {
        Decision::Permanent(reason) => assert!(reason.contains("gone"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(decide(PagerDuty, 404), Decision::Permanent(r) if !r.contains("gone")));
}
