//! VP8 through Debian's libvpx (env-libvpx-sys bindings): the codec every WebRTC browser must decode
//! (RFC 7742), for viewers whose offer has no usable H.264 (Debian's Firefox ships without OpenH264).
//!
//! The same low-latency choices as x264: real-time deadline, no lookahead (`g_lag_in_frames = 0`), no
//! frame dropping, a one-frame rate-control buffer, keyframes only on request (`kf_mode` disabled), live
//! bitrate changes through `vpx_codec_enc_config_set`, error resilience on (a lost packet spoils one frame,
//! not every frame up to the next keyframe). NV12 goes in as it is (libvpx reads the planes in place).

#![allow(unsafe_code)] // FFI edge: every unsafe block carries a SAFETY note

use std::ffi::CStr;
use std::ptr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use vpx_sys as vpx;

use super::{Codec, EncodeError, EncodedFrame, Encoder, EncoderSettings, RateControl};
use crate::frame::Nv12Frame;

/// libvpx real-time speed. Measured with `wl-webrtc bench encode` (1280x720, 2-core VM): -6 (WebRTC's
/// desktop default) in screen-content mode has p50 4.8 ms but a mean of 11-19 ms (slow frames on big
/// changes); -8 gives p50 4.0 / mean 4.1 ms, -12 no faster.
const CPU_USED: i32 = -8;

/// Time base of the pts we give libvpx: microseconds.
const TIMEBASE_HZ: i32 = 1_000_000;

/// An open libvpx VP8 encoder.
pub struct Vp8Encoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
    cfg: Box<vpx::vpx_codec_enc_cfg_t>,
    settings: EncoderSettings,
    keyframe_pending: bool,
    seq: u64,
    first_ts: Option<Instant>,
    last_pts: i64,
}

impl std::fmt::Debug for Vp8Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Encoder").field("settings", &self.settings).field("seq", &self.seq).finish_non_exhaustive()
    }
}

// SAFETY: the libvpx context is used only through `&mut self` (one thread at a time); libvpx keeps no
// thread-affine state in it.
unsafe impl Send for Vp8Encoder {}

fn error_text(ctx: &mut vpx::vpx_codec_ctx_t, what: &str, code: vpx::vpx_codec_err_t) -> String {
    // SAFETY: ctx is a context libvpx initialised (or tried to); both calls return static or ctx-owned
    // NUL-terminated strings, or NULL for the detail.
    let (msg, detail) = unsafe {
        let msg = vpx::vpx_codec_error(ctx);
        let detail = vpx::vpx_codec_error_detail(ctx);
        (
            if msg.is_null() { String::new() } else { CStr::from_ptr(msg).to_string_lossy().into_owned() },
            if detail.is_null() { String::new() } else { CStr::from_ptr(detail).to_string_lossy().into_owned() },
        )
    };
    format!("{what}: {msg} {detail} (code {})", code as i32).trim_end().to_owned()
}

/// Bytes of the rate-control buffer for one frame at `fps`, in milliseconds (what libvpx takes).
fn one_frame_ms(fps: u32) -> u32 {
    1000_u32.div_ceil(fps.max(1)).max(1)
}

impl Vp8Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Vp8Encoder, EncodeError> {
        if settings.width == 0 || settings.height == 0 || settings.fps == 0 || settings.bitrate_kbps == 0 {
            return Err(EncodeError::Invalid(format!("VP8 settings {settings:?}")));
        }
        if settings.width > 16_383 || settings.height > 16_383 {
            return Err(EncodeError::Invalid(format!(
                "VP8 cannot code {}x{} (at most 16383 a side)",
                settings.width, settings.height
            )));
        }
        // SAFETY: vpx_codec_vp8_cx returns a pointer to libvpx's static interface.
        let iface = unsafe { vpx::vpx_codec_vp8_cx() };
        let mut cfg = Box::new(std::mem::MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::uninit());
        // SAFETY: iface is valid, cfg is a valid out-pointer that config_default fills completely.
        let rc = unsafe { vpx::vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0) };
        if rc != vpx::VPX_CODEC_OK {
            return Err(EncodeError::Open(format!("libvpx has no default VP8 configuration (code {})", rc as i32)));
        }
        // SAFETY: filled by the successful call above.
        let mut cfg: Box<vpx::vpx_codec_enc_cfg_t> = unsafe { cfg.assume_init() };
        let (w, h) = (settings.width.next_multiple_of(2), settings.height.next_multiple_of(2));
        cfg.g_w = w;
        cfg.g_h = h;
        cfg.g_timebase = vpx::vpx_rational { num: 1, den: TIMEBASE_HZ };
        cfg.g_threads = if settings.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get()).min(8) as u32
        } else {
            settings.threads
        };
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_resize_allowed = 0;
        cfg.rc_end_usage = match settings.rate_control {
            RateControl::Cbr => vpx::vpx_rc_mode::VPX_CBR,
            RateControl::Vbr => vpx::vpx_rc_mode::VPX_VBR,
        };
        cfg.rc_target_bitrate = settings.bitrate_kbps;
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        let buf = one_frame_ms(settings.fps);
        (cfg.rc_buf_sz, cfg.rc_buf_initial_sz, cfg.rc_buf_optimal_sz) = (buf, buf, buf);
        cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_DISABLED;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = u32::MAX >> 1;
        // SAFETY: an all-zero context is what vpx_codec_enc_init_ver expects to fill.
        let mut ctx: Box<vpx::vpx_codec_ctx_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: ctx and cfg are valid and outlive the call; the ABI version is the one the bindings match.
        let rc =
            unsafe { vpx::vpx_codec_enc_init_ver(&mut *ctx, iface, &*cfg, 0, vpx::VPX_ENCODER_ABI_VERSION as i32) };
        if rc != vpx::VPX_CODEC_OK {
            return Err(EncodeError::Open(error_text(&mut ctx, "libvpx VP8 encoder init", rc)));
        }
        let mut enc = Vp8Encoder { ctx, cfg, settings, keyframe_pending: true, seq: 0, first_ts: None, last_pts: -1 };
        // Real-time speed (see CPU_USED), a cap on
        // keyframe size (3 frames' worth) so a new viewer's keyframe does not stall the link, screen content
        // tuning, no noise filter (screen content has none), skip unchanged blocks, token partitions for
        // the threads.
        let partitions = match enc.cfg.g_threads {
            0 | 1 => 0,
            2 | 3 => 1,
            4..=7 => 2,
            _ => 3,
        };
        use vpx::vp8e_enc_control_id as c;
        for (id, value) in [
            (c::VP8E_SET_CPUUSED, CPU_USED),
            (c::VP8E_SET_MAX_INTRA_BITRATE_PCT, 300),
            (c::VP8E_SET_SCREEN_CONTENT_MODE, 1),
            (c::VP8E_SET_NOISE_SENSITIVITY, 0),
            (c::VP8E_SET_STATIC_THRESHOLD, 1),
            (c::VP8E_SET_TOKEN_PARTITIONS, partitions),
        ] {
            // SAFETY: the context is initialised; each of these controls takes one int.
            let rc = unsafe { vpx::vpx_codec_control_(&mut *enc.ctx, id as i32, value as std::ffi::c_int) };
            if rc != vpx::VPX_CODEC_OK {
                tracing::debug!("libvpx ignored control {id:?} = {value}: code {}", rc as i32);
            }
        }
        Ok(enc)
    }

    fn pts(&mut self, capture_ts: Instant) -> i64 {
        let first = *self.first_ts.get_or_insert(capture_ts);
        let pts = capture_ts.saturating_duration_since(first).as_micros() as i64;
        // libvpx wants pts strictly increasing; a refresh re-encode can carry an older capture time.
        let pts = pts.max(self.last_pts + 1);
        self.last_pts = pts;
        pts
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed exactly once.
        unsafe { vpx::vpx_codec_destroy(&mut *self.ctx) };
    }
}

impl Encoder for Vp8Encoder {
    fn encode(&mut self, frame: &Nv12Frame, capture_ts: Instant, force_idr: bool) -> Result<EncodedFrame, EncodeError> {
        self.settings.check_frame(frame)?;
        let (w, h) = (frame.padded_width(), frame.padded_height());
        let ph = h as usize;
        if frame.y.len() < frame.stride * ph || frame.uv.len() < frame.stride * ph / 2 || frame.stride < w as usize {
            return Err(EncodeError::Invalid("NV12 planes shorter than their size says".into()));
        }
        let stride = i32::try_from(frame.stride).map_err(|_| EncodeError::Invalid("stride overflows".into()))?;
        let key = force_idr || self.keyframe_pending;
        // SAFETY: an all-zero vpx_image is a valid starting value; every field libvpx reads is set below.
        let mut img: vpx::vpx_image_t = unsafe { std::mem::zeroed() };
        img.fmt = vpx::vpx_img_fmt::VPX_IMG_FMT_NV12;
        img.cs = vpx::vpx_color_space::VPX_CS_BT_709;
        img.range = vpx::vpx_color_range::VPX_CR_STUDIO_RANGE;
        (img.w, img.h, img.d_w, img.d_h) = (w, h, w, h);
        img.bit_depth = 8;
        img.bps = 12;
        (img.x_chroma_shift, img.y_chroma_shift) = (1, 1);
        // libvpx only reads input planes; NV12's V samples sit one byte after the U samples.
        img.planes[0] = frame.y.as_ptr().cast_mut();
        img.planes[1] = frame.uv.as_ptr().cast_mut();
        // SAFETY: uv has at least one byte (size checked above), so +1 stays inside or one past it.
        img.planes[2] = unsafe { frame.uv.as_ptr().add(1) }.cast_mut();
        img.stride = [stride, stride, stride, 0];
        let pts = self.pts(capture_ts);
        let duration = (TIMEBASE_HZ as u64 / u64::from(self.settings.fps.max(1))).max(1);
        let flags = if key { vpx::VPX_EFLAG_FORCE_KF as i64 } else { 0 };
        // SAFETY: the context is open; img points at planes that stay alive and unmodified for the call and
        // match the size the encoder was opened with (checked above).
        let rc = unsafe {
            vpx::vpx_codec_encode(&mut *self.ctx, &img, pts, duration as _, flags as _, vpx::VPX_DL_REALTIME as _)
        };
        if rc != vpx::VPX_CODEC_OK {
            tracing::debug!("{}", error_text(&mut self.ctx, "vpx_codec_encode", rc));
            return Err(EncodeError::Encode(rc as i32));
        }
        let mut data = BytesMut::new();
        let mut is_key = false;
        let mut iter: vpx::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is open; iter is the iterator libvpx hands back between calls.
            let pkt = unsafe { vpx::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: non-NULL packets are valid until the next encode call; a frame packet's buf/sz describe
            // the compressed frame, copied out at once.
            unsafe {
                if (*pkt).kind == vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    let f = (*pkt).data.frame;
                    if !f.buf.is_null() && f.sz > 0 {
                        data.extend_from_slice(std::slice::from_raw_parts(f.buf.cast::<u8>(), f.sz as usize));
                    }
                    is_key |= f.flags & vpx::VPX_FRAME_IS_KEY != 0;
                }
            }
        }
        if data.is_empty() {
            return Err(EncodeError::NoOutput);
        }
        if is_key {
            self.keyframe_pending = false;
        }
        let out = EncodedFrame {
            data: Bytes::from(data),
            idr: is_key,
            capture_ts,
            seq: self.seq,
            width: w,
            height: h,
            codec: Codec::Vp8,
        };
        self.seq += 1;
        Ok(out)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        if kbps == 0 {
            return Err(EncodeError::Invalid("bitrate must be positive".into()));
        }
        if kbps == self.settings.bitrate_kbps {
            return Ok(());
        }
        self.cfg.rc_target_bitrate = kbps;
        // SAFETY: the context is open and cfg is the configuration it was opened with, bitrate changed.
        let rc = unsafe { vpx::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg) };
        if rc != vpx::VPX_CODEC_OK {
            self.cfg.rc_target_bitrate = self.settings.bitrate_kbps;
            return Err(EncodeError::Reconfig(rc as i32));
        }
        self.settings.bitrate_kbps = kbps;
        Ok(())
    }

    fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    fn backend(&self) -> &'static str {
        "libvpx"
    }
}

/// Whether a VP8 frame (RFC 6386 §9.1 frame tag) is a keyframe with the start code, and its size.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let tag = frame.get(..10)?;
    let key = tag[0] & 1 == 0;
    (key && tag[3..6] == [0x9d, 0x01, 0x2a])
        .then(|| (u16::from_le_bytes([tag[6], tag[7]]) & 0x3fff, u16::from_le_bytes([tag[8], tag[9]]) & 0x3fff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Profile;

    fn settings(w: u32, h: u32) -> EncoderSettings {
        EncoderSettings {
            width: w,
            height: h,
            fps: 30,
            bitrate_kbps: 1500,
            rate_control: RateControl::Cbr,
            threads: 1,
            profile: Profile::ConstrainedBaseline,
            intra_refresh: false,
        }
    }

    fn paint(f: &mut Nv12Frame, t: usize) {
        for (i, v) in f.y.iter_mut().enumerate() {
            *v = (16 + ((i / 7 + t * 5) % 200)) as u8;
        }
        f.uv.fill(128);
    }

    #[test]
    fn first_frame_is_a_keyframe_then_inter_frames_until_asked() {
        let mut enc = Vp8Encoder::new(settings(321, 241)).expect("open");
        let mut f = Nv12Frame::new(321, 241);
        let t0 = Instant::now();
        let mut keys = Vec::new();
        for t in 0..6 {
            paint(&mut f, t);
            if t == 4 {
                enc.request_keyframe();
            }
            let out = enc.encode(&f, t0 + std::time::Duration::from_millis(33 * t as u64), false).expect("encode");
            assert_eq!(out.codec, Codec::Vp8);
            assert_eq!(out.seq, t as u64);
            assert_eq!(keyframe_size(&out.data).is_some(), out.idr, "frame {t}: the tag agrees with the flag");
            keys.push(out.idr);
            if out.idr {
                assert_eq!(keyframe_size(&out.data), Some((322, 242)), "the even coded size");
            }
        }
        assert_eq!(keys, [true, false, false, false, true, false]);
        assert!(enc.encode(&f, t0, true).expect("forced").idr, "force_idr works, even with an older capture time");
    }

    #[test]
    fn bitrate_changes_live_and_wrong_input_is_refused() {
        let mut enc = Vp8Encoder::new(settings(320, 240)).expect("open");
        enc.set_bitrate(600).expect("lower");
        assert_eq!(enc.settings().bitrate_kbps, 600);
        assert!(enc.set_bitrate(0).is_err());
        let f = Nv12Frame::new(160, 120);
        assert!(matches!(enc.encode(&f, Instant::now(), false), Err(EncodeError::SizeMismatch { .. })));
        assert!(Vp8Encoder::new(settings(0, 240)).is_err());
        assert!(Vp8Encoder::new(settings(20_000, 240)).is_err());
    }
}
