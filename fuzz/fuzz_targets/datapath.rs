//! The datapath, both directions, with a populated connection table: each input is a
//! series of frames (a meta byte: interface, partial checksum, GSO, time step, a sweep;
//! a 2-byte length; the frame), run after the seed frames that open connections of every
//! kind, in a table emptied of the previous input's. No frame may panic it.
#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static OPENING: OnceLock<Vec<(u8, Vec<u8>)>> = OnceLock::new();
thread_local! {
    static HARNESS: wvs_fuzz::Harness = wvs_fuzz::Harness::new();
}
/// The datapath's clock, across inputs: each input starts a day after the last one ended,
/// when everything the last one left in the table has expired.
static CLOCK: AtomicU64 = AtomicU64::new(0);

libfuzzer_sys::fuzz_target!(
    init: {
        // scripts/fuzz.sh seeds the corpora this way: the harness's own frames.
        if let Some(dir) = std::env::var_os("WVS_FUZZ_WRITE_SEEDS") {
            wvs_fuzz::write_seeds(std::path::Path::new(&dir));
            std::process::exit(0);
        }
    },
    |data: &[u8]| {
    let opening = OPENING.get_or_init(wvs_fuzz::seed_frames);
    // One harness for every input (building one costs more than running one), emptied
    // first: the sweep a day later expires every connection and template left.
    HARNESS.with(|h| run(h, opening, data));
});

fn run(h: &wvs_fuzz::Harness, opening: &[(u8, Vec<u8>)], data: &[u8]) {
    let mut now = CLOCK.load(Relaxed) + 86_400_000;
    h.conns.sweep(now);
    for (meta, f) in opening {
        h.run(now, *meta, f);
    }
    let mut rest = data;
    while let [meta, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        now += u64::from(meta >> 3) * 250;
        if meta & 0x80 != 0 {
            h.conns.sweep(now);
            h.conns.random_dropentry(now);
        }
        h.run(now, *meta, frame);
        rest = next;
    }
    CLOCK.store(now, Relaxed);
}
