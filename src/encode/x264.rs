//! libx264 through x264-sys, behind a safe RAII wrapper (the `x264` crate hides the settings we need).
//!
//! Settings: ultrafast + zerolatency (no lookahead, no frame delay, sliced threads), no B-frames, infinite
//! keyint with IDR only on request, SPS/PPS repeated before every IDR, one-frame VBV, BT.709 limited-range
//! VUI. H.264 4:2:0 crops in units of 2 pixels, so an odd size cannot be signalled: odd sizes are encoded
//! at the padded (even) size, whose extra column/row repeats the last visible one (see `Nv12Frame`).
//! All `unsafe` of the encoder lives here; the handle is owned by [`X264Encoder`] and closed on drop.

#![allow(unsafe_code)] // FFI edge: every unsafe block carries a SAFETY note

use std::ffi::CString;
use std::ptr;
use std::time::Instant;

use bytes::Bytes;
use x264_sys as sys;

use super::{EncodeError, EncodedFrame, Encoder, EncoderSettings, Profile, RateControl};
use crate::frame::Nv12Frame;

/// x264's "infinite" keyframe interval.
const KEYINT_INFINITE: i32 = 1 << 30;

/// An open libx264 encoder.
pub struct X264Encoder {
    handle: ptr::NonNull<sys::x264_t>,
    settings: EncoderSettings,
    keyframe_pending: bool,
    seq: u64,
}

impl std::fmt::Debug for X264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X264Encoder").field("settings", &self.settings).field("seq", &self.seq).finish()
    }
}

// SAFETY: an x264_t is used by one thread at a time (all methods take &mut self); libx264 keeps no
// thread-local state tied to the opening thread, so moving the handle between threads is sound.
unsafe impl Send for X264Encoder {}

/// Fill `p` for `s`. Pure apart from the libx264 calls that initialise the struct.
fn params_for(s: &EncoderSettings) -> Result<sys::x264_param_t, EncodeError> {
    if s.width == 0 || s.height == 0 || s.width > 16384 || s.height > 16384 {
        return Err(EncodeError::Invalid(format!("size {}x{}", s.width, s.height)));
    }
    if s.fps == 0 || s.bitrate_kbps == 0 {
        return Err(EncodeError::Invalid("fps and bitrate must be positive".into()));
    }
    let preset = CString::new("ultrafast").map_err(|e| EncodeError::Open(e.to_string()))?;
    let tune = CString::new("zerolatency").map_err(|e| EncodeError::Open(e.to_string()))?;
    let mut p = std::mem::MaybeUninit::<sys::x264_param_t>::uninit();
    // SAFETY: x264_param_default_preset fully initialises the struct it is given; the strings outlive it.
    let rc = unsafe { sys::x264_param_default_preset(p.as_mut_ptr(), preset.as_ptr(), tune.as_ptr()) };
    if rc < 0 {
        return Err(EncodeError::Open("x264 rejected preset ultrafast/zerolatency".into()));
    }
    // SAFETY: initialised by x264_param_default_preset above (rc >= 0).
    let mut p = unsafe { p.assume_init() };
    let (pw, ph) = (s.width.next_multiple_of(2), s.height.next_multiple_of(2));
    p.i_width = pw as i32;
    p.i_height = ph as i32;
    p.i_csp = sys::X264_CSP_NV12 as i32;
    p.i_bitdepth = 8;
    p.i_threads = s.threads as i32;
    p.i_log_level = sys::X264_LOG_ERROR as i32;
    p.i_fps_num = s.fps;
    p.i_fps_den = 1;
    p.i_timebase_num = 1;
    p.i_timebase_den = s.fps;
    p.b_vfr_input = 0;
    p.i_keyint_max = KEYINT_INFINITE;
    p.i_keyint_min = KEYINT_INFINITE;
    p.i_scenecut_threshold = 0;
    p.i_bframe = 0;
    p.b_intra_refresh = i32::from(s.intra_refresh);
    p.b_repeat_headers = 1;
    p.b_annexb = 1;
    p.b_aud = 0;
    // ultrafast turns CABAC off; Main is only worth having with it.
    p.b_cabac = i32::from(s.profile == Profile::Main);
    p.vui.i_colorprim = 1; // BT.709
    p.vui.i_transfer = 1;
    p.vui.i_colmatrix = 1;
    p.vui.b_fullrange = 0;
    apply_rate(&mut p, s.rate_control, s.bitrate_kbps, s.fps);
    let profile = CString::new(match s.profile {
        Profile::ConstrainedBaseline => "baseline",
        Profile::Main => "main",
    })
    .map_err(|e| EncodeError::Open(e.to_string()))?;
    // SAFETY: `p` is initialised and `profile` is a valid C string for the call.
    if unsafe { sys::x264_param_apply_profile(&mut p, profile.as_ptr()) } < 0 {
        return Err(EncodeError::Open(format!("x264 cannot apply profile {:?}", s.profile)));
    }
    Ok(p)
}

/// Rate-control fields for a target: one frame of VBV so no frame can burst past the link.
fn apply_rate(p: &mut sys::x264_param_t, rc: RateControl, kbps: u32, fps: u32) {
    let kbps = kbps as i32;
    match rc {
        RateControl::Cbr => {
            p.rc.i_rc_method = sys::X264_RC_ABR as i32;
            p.rc.i_bitrate = kbps;
        }
        RateControl::Vbr => {
            p.rc.i_rc_method = sys::X264_RC_CRF as i32;
            p.rc.f_rf_constant = 23.0;
        }
    }
    p.rc.i_vbv_max_bitrate = kbps;
    p.rc.i_vbv_buffer_size = (kbps / fps.max(1) as i32).max(1);
    p.rc.f_vbv_buffer_init = 0.9;
}

impl X264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<X264Encoder, EncodeError> {
        let mut p = params_for(&settings)?;
        // SAFETY: `p` is a fully initialised parameter set; x264 copies what it needs.
        let handle = unsafe { sys::x264_encoder_open(&mut p) };
        let handle = ptr::NonNull::new(handle)
            .ok_or_else(|| EncodeError::Open(format!("x264_encoder_open failed for {settings:?}")))?;
        tracing::debug!(?settings, "x264 encoder open");
        Ok(X264Encoder { handle, settings, keyframe_pending: true, seq: 0 })
    }
}

impl Encoder for X264Encoder {
    fn encode(&mut self, frame: &Nv12Frame, capture_ts: Instant, force_idr: bool) -> Result<EncodedFrame, EncodeError> {
        self.settings.check_frame(frame)?;
        let ph = frame.padded_height() as usize;
        if frame.y.len() < frame.stride * ph || frame.uv.len() < frame.stride * ph / 2 {
            return Err(EncodeError::Invalid("NV12 planes shorter than their size says".into()));
        }
        let idr = force_idr || self.keyframe_pending;
        let mut pic_in = std::mem::MaybeUninit::<sys::x264_picture_t>::uninit();
        // SAFETY: x264_picture_init initialises every field of the picture.
        unsafe { sys::x264_picture_init(pic_in.as_mut_ptr()) };
        // SAFETY: initialised just above.
        let mut pic_in = unsafe { pic_in.assume_init() };
        pic_in.img.i_csp = sys::X264_CSP_NV12 as i32;
        pic_in.img.i_plane = 2;
        pic_in.img.i_stride[0] = frame.stride as i32;
        pic_in.img.i_stride[1] = frame.stride as i32;
        // x264 only reads input planes (it copies them into its own frame pool before returning).
        pic_in.img.plane[0] = frame.y.as_ptr().cast_mut();
        pic_in.img.plane[1] = frame.uv.as_ptr().cast_mut();
        pic_in.i_pts = self.seq as i64;
        pic_in.i_type = if idr { sys::X264_TYPE_IDR } else { sys::X264_TYPE_AUTO } as i32;
        let mut pic_out = std::mem::MaybeUninit::<sys::x264_picture_t>::uninit();
        let mut nals: *mut sys::x264_nal_t = ptr::null_mut();
        let mut n_nals: i32 = 0;
        // SAFETY: the handle is open; pic_in points at planes that stay alive and unmodified for the call and
        // match the stride/size the encoder was opened with (checked above); outputs are valid out-pointers.
        let size = unsafe {
            sys::x264_encoder_encode(self.handle.as_ptr(), &mut nals, &mut n_nals, &mut pic_in, pic_out.as_mut_ptr())
        };
        if size < 0 {
            return Err(EncodeError::Encode(size));
        }
        if size == 0 || nals.is_null() || n_nals <= 0 {
            return Err(EncodeError::NoOutput);
        }
        // SAFETY: x264 returns the NAL payloads of one frame back to back in one buffer starting at the first
        // NAL's payload, `size` bytes long, valid until the next call on this handle; we copy them out now.
        let data = unsafe { std::slice::from_raw_parts((*nals).p_payload, size as usize) };
        // SAFETY: written by a successful x264_encoder_encode (size > 0).
        let pic_out = unsafe { pic_out.assume_init() };
        let is_idr = pic_out.b_keyframe != 0;
        let out = EncodedFrame {
            data: Bytes::copy_from_slice(data),
            idr: is_idr,
            capture_ts,
            seq: self.seq,
            width: frame.padded_width(),
            height: frame.padded_height(),
            codec: super::Codec::H264,
        };
        if is_idr {
            self.keyframe_pending = false;
        }
        self.seq += 1;
        Ok(out)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        if kbps == 0 {
            return Err(EncodeError::Invalid("bitrate must be positive".into()));
        }
        let mut p = std::mem::MaybeUninit::<sys::x264_param_t>::uninit();
        // SAFETY: the handle is open; x264_encoder_parameters fills the whole struct.
        unsafe { sys::x264_encoder_parameters(self.handle.as_ptr(), p.as_mut_ptr()) };
        // SAFETY: initialised just above.
        let mut p = unsafe { p.assume_init() };
        apply_rate(&mut p, self.settings.rate_control, kbps, self.settings.fps);
        // SAFETY: the handle is open and `p` is the encoder's own parameter set with rate fields changed.
        let rc = unsafe { sys::x264_encoder_reconfig(self.handle.as_ptr(), &mut p) };
        if rc < 0 {
            return Err(EncodeError::Reconfig(rc));
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
        "x264"
    }
}

impl Drop for X264Encoder {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by x264_encoder_open and is closed exactly once, here.
        unsafe { sys::x264_encoder_close(self.handle.as_ptr()) };
    }
}
