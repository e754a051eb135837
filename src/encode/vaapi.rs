//! VA-API hardware H.264 encoding through cros-libva: which render node has an H.264 encode entrypoint (or
//! exactly why none does: `wl-webrtc list-encoders`, `--encoder auto`), and [`VaapiEncoder`], the encoder
//! behind the [`Encoder`] trait.
//!
//! The encoder drives the driver's slice-level interface directly (as ffmpeg's and GStreamer's VA encoders
//! do): we decide every picture (IDR when asked, else P from the previous one: no B-frames, no frame delay),
//! write SPS/PPS ourselves (`encode::h264`; cros-libva 0.0.12 has no packed-header buffers, and a driver that
//! writes its own is detected and left alone), and send rate control (CBR, one-frame HRD buffer) with every
//! picture, so a bitrate change applies from the next frame. Frames are uploaded into the driver's input
//! surface through `vaDeriveImage` (a direct map) where the driver allows it, else `vaPutImage`.

#![allow(unsafe_code)] // one `unsafe impl Send`, with its SAFETY note

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use cros_codecs::libva::{
    self, BufferType, EncCodedBuffer, EncMiscParameter, EncMiscParameterFrameRate, EncMiscParameterHRD,
    EncMiscParameterRateControl, EncPictureParameter, EncPictureParameterBufferH264, EncSequenceParameter,
    EncSequenceParameterBufferH264, EncSliceParameter, EncSliceParameterBufferH264, H264EncFrameCropOffsets,
    H264EncPicFields, H264EncSeqFields, H264VuiFields, MappedCodedBuffer, Picture, PictureH264, RcFlags, Surface,
    UsageHint, VAConfigAttrib, VAConfigAttribType, VAEntrypoint, VAProfile,
};

use super::h264::{H264Profile, Sequence};
use super::{EncodeError, EncodedFrame, Encoder, EncoderSettings, Profile};
use crate::frame::Nv12Frame;

/// A render node that can encode H.264.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaapiDevice {
    pub path: PathBuf,
    pub vendor: String,
    /// H.264 profiles with an encode entrypoint, with the entrypoint (`EncSlice` or the low-power
    /// `EncSliceLP`).
    pub h264_encode: Vec<(&'static str, &'static str)>,
}

/// Why VA-API cannot encode here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaapiUnavailable {
    #[error("no render node (/dev/dri/renderD*): this machine has no GPU driver loaded")]
    NoRenderNode,
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: the VA driver did not initialise ({reason}); is a VA-API driver installed for this GPU?")]
    Init { path: PathBuf, reason: String },
    #[error("{path} ({vendor}) has no H.264 encode entrypoint (it may decode only)")]
    NoH264Encode { path: PathBuf, vendor: String },
}

/// The H.264 profiles browsers decode, by preference.
const PROFILES: [(VAProfile::Type, &str); 3] = [
    (VAProfile::VAProfileH264ConstrainedBaseline, "constrained-baseline"),
    (VAProfile::VAProfileH264Main, "main"),
    (VAProfile::VAProfileH264High, "high"),
];

/// The render nodes of this machine, lowest-numbered first.
pub fn render_nodes() -> Vec<PathBuf> {
    crate::buffer::dmabuf::render_nodes(Path::new(crate::buffer::dmabuf::DRI_DIR))
}

/// Probe `device`, or every render node until one can encode H.264 (the last node's reason otherwise).
pub fn probe(device: Option<&Path>) -> Result<VaapiDevice, VaapiUnavailable> {
    let nodes = match device {
        Some(d) => vec![d.to_path_buf()],
        None => render_nodes(),
    };
    let mut last = VaapiUnavailable::NoRenderNode;
    for node in nodes {
        match probe_one(&node) {
            Ok(d) => return Ok(d),
            Err(e) => {
                tracing::debug!("VA-API: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

fn probe_one(path: &Path) -> Result<VaapiDevice, VaapiUnavailable> {
    let display = libva::Display::open_drm_display(path).map_err(|e| match e {
        libva::OpenDrmDisplayError::DeviceOpen(io) => {
            VaapiUnavailable::Open { path: path.to_path_buf(), reason: io.to_string() }
        }
        other => VaapiUnavailable::Init { path: path.to_path_buf(), reason: other.to_string() },
    })?;
    let vendor = display.query_vendor_string().unwrap_or_else(|e| e.to_owned());
    let offered = display.query_config_profiles().unwrap_or_default();
    let mut h264_encode = Vec::new();
    for (profile, name) in PROFILES {
        if !offered.contains(&profile) {
            continue;
        }
        if let Some((_, entry)) = encode_entrypoint(&display, profile) {
            h264_encode.push((name, entry));
        }
    }
    if h264_encode.is_empty() {
        return Err(VaapiUnavailable::NoH264Encode { path: path.to_path_buf(), vendor });
    }
    Ok(VaapiDevice { path: path.to_path_buf(), vendor, h264_encode })
}

/// The encode entrypoint `display` has for `profile` (full-power `EncSlice` preferred, else the low-power
/// `EncSliceLP`), with its name.
fn encode_entrypoint(display: &libva::Display, profile: VAProfile::Type) -> Option<(VAEntrypoint::Type, &'static str)> {
    let entrypoints = display.query_config_entrypoints(profile).unwrap_or_default();
    [(VAEntrypoint::VAEntrypointEncSlice, "EncSlice"), (VAEntrypoint::VAEntrypointEncSliceLP, "EncSliceLP")]
        .into_iter()
        .find(|(e, _)| entrypoints.contains(e))
}

fn va_profile(p: H264Profile) -> VAProfile::Type {
    match p {
        H264Profile::ConstrainedBaseline => VAProfile::VAProfileH264ConstrainedBaseline,
        H264Profile::Main => VAProfile::VAProfileH264Main,
        H264Profile::High => VAProfile::VAProfileH264High,
    }
}

fn va_err(what: &str) -> impl Fn(libva::VaError) -> EncodeError + '_ {
    move |e| EncodeError::Open(format!("VA-API {what}: {e}"))
}

/// A hardware H.264 encoder on one render node.
pub struct VaapiEncoder {
    settings: EncoderSettings,
    device: PathBuf,
    seq: Sequence,
    /// SPS + PPS, in front of every IDR.
    headers: Vec<u8>,
    // Field order is drop order: buffers and surfaces before the context, the context before the config (each
    // holds the display).
    coded: EncCodedBuffer,
    input: Surface<()>,
    /// Reconstructed pictures: the one being encoded and the reference (the previous one), in turn.
    recon: Vec<Surface<()>>,
    context: Rc<libva::Context>,
    _config: libva::Config,
    nv12: libva::VAImageFormat,
    entrypoint: &'static str,
    /// Whether `vaDeriveImage` works on the input surface (None: not tried yet).
    derive: Option<bool>,
    /// Which `recon` surface the next picture reconstructs into.
    cur: usize,
    /// frame_num of the next picture (0 at an IDR).
    frame_num: u32,
    /// idr_pic_id of the last IDR (two IDRs in a row must differ).
    idr_pic_id: u16,
    keyframe_pending: bool,
    /// The sequence parameters go to the driver with the next picture (at an IDR and after a bitrate change).
    send_sequence: bool,
    /// The driver writes SPS/PPS itself (seen in its first IDR): ours are not added.
    driver_headers: bool,
    out_seq: u64,
}

impl std::fmt::Debug for VaapiEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaapiEncoder")
            .field("device", &self.device)
            .field("settings", &self.settings)
            .field("entrypoint", &self.entrypoint)
            .field("seq", &self.out_seq)
            .finish()
    }
}

// SAFETY: cros-libva's objects share their display through `Rc`s, so they are not Send. Every one of them
// (display, config, context, surfaces, coded buffer) is created by `VaapiEncoder::new`, owned by this struct
// and never handed out: all the `Rc` clones move together, and only one thread at a time uses them (every
// method takes `&mut self`). libva itself may be used from any thread.
unsafe impl Send for VaapiEncoder {}

impl VaapiEncoder {
    /// Open an encoder on `device` (a render node) for `settings`.
    pub fn new(device: &Path, settings: EncoderSettings) -> Result<VaapiEncoder, EncodeError> {
        if settings.width == 0 || settings.height == 0 || settings.width > 8192 || settings.height > 8192 {
            return Err(EncodeError::Invalid(format!("size {}x{}", settings.width, settings.height)));
        }
        if settings.fps == 0 || settings.bitrate_kbps == 0 {
            return Err(EncodeError::Invalid("fps and bitrate must be positive".into()));
        }
        let display = libva::Display::open_drm_display(device)
            .map_err(|e| EncodeError::Open(format!("VA-API: cannot open {}: {e}", device.display())))?;
        let offered = display.query_config_profiles().map_err(va_err("profiles"))?;
        // The configured profile if the device encodes it, else the nearest one it does.
        let wanted = match settings.profile {
            Profile::ConstrainedBaseline => H264Profile::ConstrainedBaseline,
            Profile::Main => H264Profile::Main,
        };
        let order = [wanted, H264Profile::ConstrainedBaseline, H264Profile::Main, H264Profile::High];
        let chosen = order
            .into_iter()
            .filter(|p| offered.contains(&va_profile(*p)))
            .find_map(|p| encode_entrypoint(&display, va_profile(p)).map(|e| (p, e)));
        let Some((profile, (entrypoint, entrypoint_name))) = chosen else {
            return Err(EncodeError::Open(format!("VA-API: {} has no H.264 encode entrypoint", device.display())));
        };
        let mut attrs = [
            VAConfigAttrib { type_: VAConfigAttribType::VAConfigAttribRTFormat, value: 0 },
            VAConfigAttrib { type_: VAConfigAttribType::VAConfigAttribRateControl, value: 0 },
        ];
        display.get_config_attributes(va_profile(profile), entrypoint, &mut attrs).map_err(va_err("attributes"))?;
        if attrs[0].value & libva::VA_RT_FORMAT_YUV420 == 0 {
            return Err(EncodeError::Open("VA-API: the driver cannot encode YUV 4:2:0".into()));
        }
        let rc = [libva::VA_RC_CBR, libva::VA_RC_VBR].into_iter().find(|rc| attrs[1].value & rc != 0);
        let Some(rc) = rc else {
            return Err(EncodeError::Open("VA-API: the driver has neither CBR nor VBR rate control".into()));
        };
        let config = display
            .create_config(
                vec![
                    VAConfigAttrib {
                        type_: VAConfigAttribType::VAConfigAttribRTFormat,
                        value: libva::VA_RT_FORMAT_YUV420,
                    },
                    VAConfigAttrib { type_: VAConfigAttribType::VAConfigAttribRateControl, value: rc },
                ],
                va_profile(profile),
                entrypoint,
            )
            .map_err(va_err("config"))?;
        let seq = Sequence::new(profile, settings.width, settings.height, settings.fps);
        let (cw, ch) = (seq.mb_width * 16, seq.mb_height * 16);
        let mut surfaces = display
            .create_surfaces(
                libva::VA_RT_FORMAT_YUV420,
                Some(libva::VA_FOURCC_NV12),
                cw,
                ch,
                Some(UsageHint::USAGE_HINT_ENCODER),
                vec![(); 3],
            )
            .map_err(va_err("surfaces"))?;
        let input = surfaces.remove(0);
        let context = display.create_context(&config, cw, ch, Some(&surfaces), true).map_err(va_err("context"))?;
        let nv12 = display
            .query_image_formats()
            .map_err(va_err("image formats"))?
            .into_iter()
            .find(|f| f.fourcc == libva::VA_FOURCC_NV12)
            .ok_or_else(|| EncodeError::Open("VA-API: the driver has no NV12 image format".into()))?;
        // The worst case of a frame: raw 4:2:0 plus headers.
        let coded = context.create_enc_coded((cw * ch * 3 / 2 + 64 * 1024) as usize).map_err(va_err("coded buffer"))?;
        let headers = [seq.sps(), seq.pps()].concat();
        tracing::debug!(device = %device.display(), ?profile, entrypoint = entrypoint_name, "VA-API encoder open");
        Ok(VaapiEncoder {
            settings,
            device: device.to_path_buf(),
            seq,
            headers,
            coded,
            input,
            recon: surfaces,
            context,
            _config: config,
            nv12,
            entrypoint: entrypoint_name,
            derive: None,
            cur: 0,
            frame_num: 0,
            idr_pic_id: 0,
            keyframe_pending: true,
            send_sequence: true,
            driver_headers: false,
            out_seq: 0,
        })
    }

    /// The render node.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Copy `frame` into the input surface: through a derived image (the surface's own memory) when the
    /// driver allows it, else through an image and `vaPutImage` (on drop).
    fn upload(&mut self, frame: &Nv12Frame) -> Result<(), EncodeError> {
        let visible = (frame.padded_width(), frame.padded_height());
        let coded = (self.seq.mb_width * 16, self.seq.mb_height * 16);
        let derived = match self.derive {
            Some(false) => None,
            _ => match libva::Image::derive_from(&self.input, visible) {
                Ok(i) => Some(i),
                Err(e) => {
                    if self.derive.is_none() {
                        tracing::debug!("VA-API: vaDeriveImage unavailable ({e}); uploading with vaPutImage");
                    }
                    None
                }
            },
        };
        self.derive = Some(derived.is_some());
        let mut image = match derived {
            Some(image) => image,
            None => libva::Image::create_from(&self.input, self.nv12, coded, visible).map_err(va_err("image"))?,
        };
        let va = *image.image();
        if va.format.fourcc != libva::VA_FOURCC_NV12 || va.num_planes < 2 {
            return Err(EncodeError::Open("VA-API: the input image is not NV12".into()));
        }
        let (pw, ph) = (visible.0 as usize, visible.1 as usize);
        let rows = (va.height as usize).min(coded.1 as usize);
        let data = image.as_mut();
        for (plane, src, plane_rows, src_rows) in [(0usize, &frame.y, rows, ph), (1, &frame.uv, rows / 2, ph / 2)] {
            let (off, pitch) = (va.offsets[plane] as usize, va.pitches[plane] as usize);
            for r in 0..plane_rows {
                // Rows below the picture repeat its last row (the encoder codes whole macroblocks).
                let s = r.min(src_rows - 1) * frame.stride;
                let d = off + r * pitch;
                let (Some(dst), Some(src)) = (data.get_mut(d..d + pw), src.get(s..s + pw)) else {
                    return Err(EncodeError::Invalid("the NV12 frame or the VA image is smaller than it says".into()));
                };
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn picture(&self, idx: usize, frame_num: u32) -> PictureH264 {
        PictureH264::new(
            self.recon[idx].id(),
            frame_num,
            libva::VA_PICTURE_H264_SHORT_TERM_REFERENCE,
            (frame_num * 2) as i32,
            (frame_num * 2) as i32,
        )
    }

    fn rate_control(&self) -> Vec<BufferType> {
        let bps = self.settings.bitrate_kbps.saturating_mul(1000);
        let rc = EncMiscParameterRateControl::new(
            bps,
            100,                                     // target_percentage: CBR
            1000,                                    // window_size, ms
            26,                                      // initial_qp
            1,                                       // min_qp
            0,                                       // basic_unit_size
            RcFlags::new(0, 1, 0, 0, 0, 0, 0, 0, 0), // no frame skipping
            0,
            51, // max_qp
            0,
            0,
        );
        // One frame of buffer: no frame may burst past the link.
        let frame_bits = (bps / self.settings.fps.max(1)).max(1);
        vec![
            BufferType::EncMiscParameter(EncMiscParameter::RateControl(rc)),
            BufferType::EncMiscParameter(EncMiscParameter::FrameRate(EncMiscParameterFrameRate::new(
                self.settings.fps,
                0,
            ))),
            BufferType::EncMiscParameter(EncMiscParameter::HRD(EncMiscParameterHRD::new(frame_bits / 2, frame_bits))),
        ]
    }

    fn sequence(&self) -> BufferType {
        let s = &self.seq;
        let (crop_right, crop_bottom) = s.crop();
        let crop =
            (crop_right != 0 || crop_bottom != 0).then(|| H264EncFrameCropOffsets::new(0, crop_right, 0, crop_bottom));
        BufferType::EncSequenceParameter(EncSequenceParameter::H264(EncSequenceParameterBufferH264::new(
            0,
            s.level_idc,
            0, // intra_period: IDR only on request
            0,
            1, // ip_period: no B-frames
            self.settings.bitrate_kbps.saturating_mul(1000),
            1,
            s.mb_width as u16,
            s.mb_height as u16,
            &H264EncSeqFields::new(1, 1, 0, 0, 1, s.log2_max_frame_num - 4, 2, 0, 0),
            0,
            0,
            0,
            0,
            0,
            [0; 256],
            crop,
            Some(H264VuiFields::new(0, 1, 1, 16, 16, 0, 0, 1)),
            0,
            0,
            0,
            1,
            s.fps * 2,
        )))
    }

    fn encode_picture(&mut self, idr: bool) -> Result<Vec<u8>, EncodeError> {
        let frame_num = if idr { 0 } else { self.frame_num };
        let (cur, prev) = (self.cur, 1 - self.cur);
        let invalid = || PictureH264::new(libva::VA_INVALID_ID, 0, libva::VA_PICTURE_H264_INVALID, 0, 0);
        let mut refs: [PictureH264; 16] = std::array::from_fn(|_| invalid());
        let mut list0: [PictureH264; 32] = std::array::from_fn(|_| invalid());
        if !idr {
            let last = (frame_num + (1 << self.seq.log2_max_frame_num) - 1) & ((1 << self.seq.log2_max_frame_num) - 1);
            refs[0] = self.picture(prev, last);
            list0[0] = self.picture(prev, last);
        }
        let pic_fields =
            H264EncPicFields::new(u32::from(idr), 1, u32::from(self.seq.profile.cabac()), 0, 0, 0, 0, 1, 0, 0, 0);
        let pic = EncPictureParameterBufferH264::new(
            self.picture(cur, frame_num),
            refs,
            self.coded.id(),
            0,
            0,
            0,
            frame_num as u16,
            self.seq.pic_init_qp,
            0,
            0,
            0,
            0,
            &pic_fields,
        );
        let slice = EncSliceParameterBufferH264::new(
            0,
            self.seq.mb_width * self.seq.mb_height,
            libva::VA_INVALID_ID,
            if idr { 2 } else { 0 },
            0,
            self.idr_pic_id,
            ((frame_num * 2) & 0xffff) as u16,
            0,
            [0, 0],
            0,
            0,
            0,
            0,
            list0,
            std::array::from_fn(|_| invalid()),
            0,
            0,
            0,
            [0; 32],
            [0; 32],
            0,
            [[0; 2]; 32],
            [[0; 2]; 32],
            0,
            [0; 32],
            [0; 32],
            0,
            [[0; 2]; 32],
            [[0; 2]; 32],
            0,
            0,
            0,
            0,
            0,
        );
        let mut buffers = Vec::new();
        if idr || self.send_sequence {
            buffers.push(self.sequence());
        }
        buffers.push(BufferType::EncPictureParameter(EncPictureParameter::H264(pic)));
        buffers.push(BufferType::EncSliceParameter(EncSliceParameter::H264(slice)));
        buffers.extend(self.rate_control());
        let mut picture = Picture::new(self.out_seq, Rc::clone(&self.context), &self.input);
        for b in buffers {
            picture.add_buffer(self.context.create_buffer(b).map_err(va_err("parameter buffer"))?);
        }
        let fail = |what: &'static str| move |e: libva::VaError| EncodeError::Open(format!("VA-API {what}: {e}"));
        let picture = picture.begin().map_err(fail("vaBeginPicture"))?;
        let picture = picture.render().map_err(fail("vaRenderPicture"))?;
        let picture = picture.end().map_err(fail("vaEndPicture"))?;
        picture.sync().map_err(|(e, _)| fail("vaSyncSurface")(e))?;
        let mapped = MappedCodedBuffer::new(&self.coded).map_err(fail("coded buffer"))?;
        let mut out = Vec::new();
        for segment in mapped.segments() {
            out.extend_from_slice(segment.buf);
        }
        drop(mapped);
        if out.is_empty() {
            return Err(EncodeError::NoOutput);
        }
        self.send_sequence = false;
        self.cur = prev;
        self.frame_num = (frame_num + 1) & ((1 << self.seq.log2_max_frame_num) - 1);
        Ok(out)
    }
}

/// Whether an Annex-B stream contains a NAL unit of `nal_type`.
fn has_nal(stream: &[u8], nal_type: u8) -> bool {
    stream.windows(4).any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == nal_type)
}

impl Encoder for VaapiEncoder {
    fn encode(&mut self, frame: &Nv12Frame, capture_ts: Instant, force_idr: bool) -> Result<EncodedFrame, EncodeError> {
        self.settings.check_frame(frame)?;
        let idr = force_idr || self.keyframe_pending;
        self.upload(frame)?;
        if idr {
            self.idr_pic_id = self.idr_pic_id.wrapping_add(1);
        }
        let slices = self.encode_picture(idr)?;
        let data = if idr {
            if self.out_seq == 0 || !self.driver_headers {
                self.driver_headers = has_nal(&slices, 7);
                if self.driver_headers {
                    tracing::debug!("VA-API: the driver writes its own SPS/PPS");
                }
            }
            if self.driver_headers { slices } else { [self.headers.as_slice(), &slices].concat() }
        } else {
            slices
        };
        self.keyframe_pending = false;
        let out = EncodedFrame {
            data: Bytes::from(data),
            idr,
            capture_ts,
            seq: self.out_seq,
            width: frame.padded_width(),
            height: frame.padded_height(),
            codec: super::Codec::H264,
        };
        self.out_seq += 1;
        Ok(out)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        if kbps == 0 {
            return Err(EncodeError::Invalid("bitrate must be positive".into()));
        }
        if kbps != self.settings.bitrate_kbps {
            self.settings.bitrate_kbps = kbps;
            self.send_sequence = true;
        }
        Ok(())
    }

    fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    fn backend(&self) -> &'static str {
        "vaapi"
    }
}
