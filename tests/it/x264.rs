//! The x264 encoder through its public API: IDR with SPS/PPS first and on request, profile and odd sizes in
//! the bitstream (parsed with `testkit::h264`), bitrate changes without a restart, wrong input refused.

use std::time::Instant;

use testkit::h264;
use wl_webrtc::encode::x264::X264Encoder;
use wl_webrtc::encode::{EncodeError, Encoder, EncoderSettings, Profile, RateControl};
use wl_webrtc::frame::Nv12Frame;

fn settings(w: u32, h: u32) -> EncoderSettings {
    EncoderSettings {
        width: w,
        height: h,
        fps: 30,
        bitrate_kbps: 2000,
        rate_control: RateControl::Cbr,
        threads: 1,
        profile: Profile::ConstrainedBaseline,
        intra_refresh: false,
    }
}

fn moving(frame: &mut Nv12Frame, t: usize) {
    for (i, v) in frame.y.iter_mut().enumerate() {
        *v = (16 + ((i + t * 7) % 200)) as u8;
    }
}

#[test]
fn first_frame_is_idr_with_headers_then_p_frames() {
    let mut enc = X264Encoder::new(settings(320, 240)).expect("open");
    let mut f = Nv12Frame::new(320, 240);
    let now = Instant::now();
    for t in 0..5 {
        moving(&mut f, t);
        let out = enc.encode(&f, now, false).expect("encode");
        let info = h264::access_unit_info(&out.data);
        assert_eq!(out.seq, t as u64);
        assert_eq!(out.idr, t == 0, "frame {t}");
        assert_eq!(info.idr, t == 0);
        assert_eq!(info.has_sps && info.has_pps, t == 0, "SPS/PPS only with the IDR");
    }
}

#[test]
fn keyframe_request_makes_the_next_frame_an_idr_with_sps_pps() {
    let mut enc = X264Encoder::new(settings(320, 240)).expect("open");
    let mut f = Nv12Frame::new(320, 240);
    let now = Instant::now();
    for t in 0..3 {
        moving(&mut f, t);
        enc.encode(&f, now, false).expect("encode");
    }
    enc.request_keyframe();
    moving(&mut f, 3);
    let out = enc.encode(&f, now, false).expect("encode");
    let info = h264::access_unit_info(&out.data);
    assert!(out.idr && info.idr && info.has_sps && info.has_pps);
    moving(&mut f, 4);
    assert!(!enc.encode(&f, now, false).expect("encode").idr, "only one IDR per request");
    moving(&mut f, 5);
    assert!(enc.encode(&f, now, true).expect("encode").idr, "force_idr works too");
}

#[test]
fn odd_size_is_padded_to_even_and_profile_is_constrained_baseline() {
    let mut enc = X264Encoder::new(settings(321, 241)).expect("open");
    let f = Nv12Frame::new(321, 241);
    let out = enc.encode(&f, Instant::now(), false).expect("encode");
    let sps = h264::split_annexb(&out.data).into_iter().find(|n| n.nal_type == h264::NalType::Sps).expect("SPS in IDR");
    let sps = h264::parse_sps(sps.data).expect("parse SPS");
    assert_eq!((sps.width, sps.height), (322, 242));
    assert_eq!((out.width, out.height), (322, 242));
    assert!(sps.is_constrained_baseline(), "{}", sps.profile_name());
}

#[test]
fn main_profile_when_asked() {
    let mut enc = X264Encoder::new(EncoderSettings { profile: Profile::Main, ..settings(320, 240) }).expect("open");
    let out = enc.encode(&Nv12Frame::new(320, 240), Instant::now(), false).expect("encode");
    let sps = h264::split_annexb(&out.data).into_iter().find(|n| n.nal_type == h264::NalType::Sps).expect("SPS");
    assert_eq!(h264::parse_sps(sps.data).expect("SPS").profile_idc, 77);
}

#[test]
fn wrong_frame_size_is_an_error_not_a_crash() {
    let mut enc = X264Encoder::new(settings(320, 240)).expect("open");
    let err = enc.encode(&Nv12Frame::new(640, 480), Instant::now(), false).expect_err("size mismatch");
    assert!(matches!(err, EncodeError::SizeMismatch { .. }), "{err}");
    assert!(X264Encoder::new(settings(0, 240)).is_err());
    assert!(enc.set_bitrate(0).is_err());
}

#[test]
fn bitrate_change_takes_effect_within_a_few_frames_without_restart() {
    let mut enc = X264Encoder::new(settings(320, 240)).expect("open");
    enc.set_bitrate(4000).expect("set 4 Mbit/s");
    let mut f = Nv12Frame::new(320, 240);
    let mut seed = 1u32;
    let mut noise = |f: &mut Nv12Frame| {
        for v in f.y.iter_mut().chain(f.uv.iter_mut()) {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = 16 + (seed >> 24) as u8 % 200;
        }
    };
    let now = Instant::now();
    let mut sizes = Vec::new();
    for _ in 0..40 {
        noise(&mut f);
        sizes.push(enc.encode(&f, now, false).expect("encode").data.len());
    }
    let before: usize = sizes[20..40].iter().sum();
    enc.set_bitrate(500).expect("set 500 kbit/s");
    sizes.clear();
    for _ in 0..40 {
        noise(&mut f);
        sizes.push(enc.encode(&f, now, false).expect("encode").data.len());
    }
    // "Within a few frames": from the 5th frame after the change the rate is far lower.
    let after: usize = sizes[5..25].iter().sum();
    assert!(after * 3 < before, "bytes per 20 frames: before {before}, after {after}");
    assert_eq!(enc.settings().bitrate_kbps, 500);
    assert_eq!(enc.encode(&f, now, false).expect("encode").seq, 80, "same encoder, no restart");
}

#[test]
fn intra_refresh_and_threads_are_accepted() {
    let s = EncoderSettings { intra_refresh: true, threads: 2, rate_control: RateControl::Vbr, ..settings(320, 240) };
    let mut enc = X264Encoder::new(s).expect("open");
    let mut f = Nv12Frame::new(320, 240);
    let now = Instant::now();
    let idrs: Vec<bool> = (0..10)
        .map(|t| {
            moving(&mut f, t);
            enc.encode(&f, now, false).expect("encode").idr
        })
        .collect();
    assert!(idrs[0] && idrs[1..].iter().all(|i| !i), "one IDR, then refresh waves: {idrs:?}");
}
