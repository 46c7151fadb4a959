//! The loss soak (`smoltalk lab --soak`): a stream through the lab's smoltcp uppercase client and server over a
//! segment that loses 10 % and corrupts 1 % of the frames arrives byte-exact; the faults really happened, so
//! the test cannot pass by accident; and a wrong byte is reported with its offset. The full 100 MB run is in
//! BENCHMARKS.md; here 4 MiB keep the debug build to a few seconds.

mod support;

use smoltalk::lab::soak::{run, SoakError, SoakOptions};

/// 4 MiB: about 2,900 segments each way, so 10 % loss and 1 % corruption hit every phase many times over.
const BYTES: u64 = 4 << 20;

fn options() -> SoakOptions {
    SoakOptions {
        bytes: BYTES,
        drop_chance: 10,
        corrupt_chance: 1,
        seed: 7,
        receive_buffer: smoltalk::lab::checks::LAB_TCP_RECEIVE,
        send_buffer: smoltalk::lab::checks::LAB_TCP_SEND,
        udp_requests: 30,
        reference: false,
        skip_checksums: false,
        link: smoltalk::stack::link_shape::LinkShape::default(),
    }
}

#[test]
fn a_lossy_corrupting_link_delivers_every_byte() {
    let report = run(&options(), None);
    assert!(report.passed(), "{}", report.render());
    let [faulty] = &report.runs[..] else {
        panic!("one run expected: {}", report.render());
    };
    assert_eq!(faulty.outcome, Ok(()));
    assert_eq!(faulty.verified, BYTES);
    // The faults happened, and TCP recovered from them.
    assert!(faulty.link.dropped > 100, "{}", report.render());
    assert!(faulty.link.corrupted > 5, "{}", report.render());
    assert!(faulty.link.tcp_retransmissions > 100, "{}", report.render());
    // Recovery took retransmission timeouts, but none of them backed off to smoltcp's 60 s cap.
    assert!(faulty.virtual_time.secs() > 10, "{}", report.render());
    assert!(faulty.longest_silence.secs() < 60, "{}", report.render());
    // UDP at the same faults: every request answered right, some only after a retry.
    let udp = report.udp.as_ref().expect("the UDP requests ran");
    assert_eq!(udp.answered(), 30, "{}", report.render());
    assert!(
        udp.tries[0] > 0 && udp.tries[1..].iter().sum::<u32>() > 0,
        "{}",
        report.render()
    );
}

/// With the checksums taken on trust, a flipped bit reaches the client as data, and the soak names the first
/// wrong byte: the check that the byte-exact result above rests on the checksums, and that the soak would see.
#[test]
fn without_checksums_corruption_gets_through_and_the_offset_is_reported() {
    let report = run(
        &SoakOptions {
            skip_checksums: true,
            udp_requests: 0,
            ..options()
        },
        None,
    );
    assert!(!report.passed());
    let run = &report.runs[0];
    match &run.outcome {
        Err(SoakError::Mismatch {
            offset,
            expected,
            got,
        }) => {
            assert!(*offset < BYTES && *offset >= run.verified);
            assert_ne!(expected, got);
        }
        other => panic!("expected a wrong byte, got {other:?}: {}", report.render()),
    }
    let failure = report.failure().expect("a failure line");
    assert!(failure.contains("differs at offset"), "{failure}");
}

/// The command: a table with the loss-free reference and the faulty run, both byte-exact; and a clear error,
/// not a panic, when a byte differs.
#[test]
fn smoltalk_lab_soak_prints_a_table_and_fails_clearly() {
    let mut cmd = support::smoltalk();
    cmd.args([
        "lab",
        "--soak",
        "1MiB",
        "--drop-chance",
        "10",
        "--corrupt-chance",
        "1",
        "--seed",
        "3",
        "--udp-requests",
        "10",
    ]);
    let out = support::run(cmd);
    let text = support::stdout(&out);
    assert!(out.status.success(), "{text}{}", support::stderr(&out));
    assert!(
        text.contains("1048576 bytes of uppercase over TCP"),
        "{text}"
    );
    assert!(text.contains("no faults"), "{text}");
    assert!(text.contains("10 % drop, 1 % corrupt"), "{text}");
    assert_eq!(text.matches("byte-exact").count(), 2, "{text}");
    assert!(text.contains("udp: 10 of 10 requests answered"), "{text}");

    let mut cmd = support::smoltalk();
    cmd.args([
        "lab",
        "--soak",
        "1MiB",
        "--corrupt-chance",
        "5",
        "--skip-checksums",
        "--no-reference",
    ]);
    let out = support::run(cmd);
    let err = support::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the soak failed"), "{err}");
    assert!(err.contains("differs at offset"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let mut cmd = support::smoltalk();
    cmd.args(["lab", "--drop-chance", "10"]);
    let out = support::run(cmd);
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("--soak"),
        "{}",
        support::stderr(&out)
    );
}
