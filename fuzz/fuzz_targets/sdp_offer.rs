//! A viewer's SDP offer (WHEP body or `/ws` offer) through our checks and webrtc-rs's SDP parser and
//! negotiation, up to the answer: the same path as a live viewer without sockets (`answer_offline`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wl_webrtc::encode::CodecChoice;
use wl_webrtc::transport::webrtc::answer_offline;

fuzz_target!(|data: &[u8]| {
    // WHEP refuses a body that is not UTF-8 before it gets here; /ws offers are JSON strings.
    let Ok(offer) = std::str::from_utf8(data) else { return };
    // `--codec` as well: the length picks one, so mutations visit all three.
    let choice = [CodecChoice::Auto, CodecChoice::H264, CodecChoice::Vp8][offer.len() % 3];
    if let Ok((answer, codec, _payload_type)) = answer_offline(offer, choice) {
        assert!(choice.allowed().contains(&codec), "{codec} sent although --codec {}", choice.name());
        assert!(answer.starts_with("v=0"), "an answer that is not SDP: {answer:?}");
        assert!(answer.contains("m=video"), "an answer without the video section: {answer:?}");
    }
});
