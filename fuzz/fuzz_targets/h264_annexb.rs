//! H.264 Annex-B access units: the NAL splitter and SPS parser the tests and benchmarks read streams with
//! (testkit::h264), and the webrtc-rs packetizer every encoded frame goes through before it is sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtc::rtp::packetizer::Payloader;
use testkit::h264;

/// RTP payload size the transport uses.
const MTU: usize = 1200;

fuzz_target!(|data: &[u8]| {
    for nal in h264::split_annexb(data) {
        if nal.nal_type == h264::NalType::Sps
            && let Ok(sps) = h264::parse_sps(nal.data)
        {
            let _ = (sps.profile_name(), sps.profile_level_id(), sps.is_constrained_baseline());
        }
    }
    let _ = h264::access_unit_info(data);
    let mut payloader = rtc::rtp::codec::h264::H264Payloader::default();
    if let Ok(payloads) = payloader.payload(MTU, &bytes::Bytes::copy_from_slice(data)) {
        assert!(payloads.iter().all(|p| p.len() <= MTU), "an RTP payload over the MTU");
    }
});
