//! Pure H.264 (ISO/IEC 14496-10) Annex-B bitstream toolkit.
//!
//! This module owns everything the tests need to *inspect* an H.264 elementary stream without decoding it:
//!
//! * splitting an Annex-B byte stream into NAL units ([`split_annexb`], [`Nal`], [`NalType`]),
//! * removing emulation-prevention bytes ([`unescape_rbsp`]),
//! * an MSB-first bit reader with Exp-Golomb support ([`BitReader`]),
//! * parsing sequence parameter sets up to the frame-cropping fields ([`parse_sps`], [`Sps`]), including
//!   the SDP `profile-level-id` helpers used for WebRTC negotiation,
//! * summarising an access unit ([`access_unit_info`], [`AuInfo`]).
//!
//! Everything here is allocation-light, performs no I/O, contains no `unsafe`, and never panics on
//! malformed input: all parse failures are reported as [`H264Error`].

use std::fmt;

/// Errors produced while reading H.264 bitstream structures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    /// The bit reader ran past the end of the data.
    #[error("H.264 bitstream truncated: needed {needed} more bit(s) at bit offset {bit_offset}, only {available} left")]
    UnexpectedEnd {
        /// Bit position at which the read started.
        bit_offset: usize,
        /// Number of bits the read needed.
        needed: usize,
        /// Number of bits that were still available.
        available: usize,
    },
    /// An Exp-Golomb code had more leading zero bits than fit in 32 bits.
    #[error("invalid Exp-Golomb code at bit offset {bit_offset}: more than 31 leading zero bits")]
    ExpGolombOverflow {
        /// Bit position at which the code started.
        bit_offset: usize,
    },
    /// `read_bits` was asked for more than 32 bits at once.
    #[error("cannot read {0} bits at once (at most 32 are supported)")]
    TooManyBits(u32),
    /// The NAL unit had no header byte.
    #[error("empty NAL unit (no header byte)")]
    EmptyNal,
    /// The NAL header has `forbidden_zero_bit` set.
    #[error("NAL unit header 0x{0:02x} has forbidden_zero_bit set")]
    ForbiddenZeroBit(u8),
    /// A NAL unit of the wrong type was given to a parser (e.g. a PPS to [`parse_sps`]).
    #[error("expected NAL unit type {expected}, got type {actual}")]
    UnexpectedNalType {
        /// The NAL unit type the parser handles.
        expected: u8,
        /// The NAL unit type that was found.
        actual: u8,
    },
    /// A syntax element was outside the range the specification allows.
    #[error("SPS syntax element {field} has out-of-range value {value}")]
    OutOfRange {
        /// Name of the syntax element, as spelled in the specification.
        field: &'static str,
        /// The value that was read.
        value: i64,
    },
    /// The picture size computed from the SPS does not fit in 32 bits.
    #[error("SPS picture size overflows: {0}")]
    SizeOverflow(&'static str),
    /// The frame-cropping rectangle removes the whole picture (or more).
    #[error("SPS frame cropping ({crop_a}+{crop_b} samples) does not fit in the coded {axis} of {coded} samples")]
    InvalidCrop {
        /// "width" or "height".
        axis: &'static str,
        /// Left or top crop, in luma samples.
        crop_a: u64,
        /// Right or bottom crop, in luma samples.
        crop_b: u64,
        /// Coded size along that axis, in luma samples.
        coded: u32,
    },
}

/// `nal_unit_type` values (ITU-T H.264 Table 7-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NalType {
    /// 1: coded slice of a non-IDR picture.
    NonIdrSlice,
    /// 2: coded slice data partition A.
    SliceDataA,
    /// 3: coded slice data partition B.
    SliceDataB,
    /// 4: coded slice data partition C.
    SliceDataC,
    /// 5: coded slice of an IDR picture.
    IdrSlice,
    /// 6: supplemental enhancement information.
    Sei,
    /// 7: sequence parameter set.
    Sps,
    /// 8: picture parameter set.
    Pps,
    /// 9: access unit delimiter.
    Aud,
    /// 10: end of sequence.
    EndOfSequence,
    /// 11: end of stream.
    EndOfStream,
    /// 12: filler data.
    Filler,
    /// 13: sequence parameter set extension.
    SpsExtension,
    /// 14: prefix NAL unit (SVC/MVC).
    Prefix,
    /// 15: subset sequence parameter set.
    SubsetSps,
    /// 16: depth parameter set.
    DepthParameterSet,
    /// 19: coded slice of an auxiliary coded picture without partitioning.
    AuxiliarySlice,
    /// 20: coded slice extension (SVC/MVC).
    SliceExtension,
    /// 21: coded slice extension for a depth view component.
    SliceExtensionDepth,
    /// Unspecified (0, 24..=31) or reserved (17, 18, 22, 23) values.
    Other(u8),
}

impl NalType {
    /// Maps a 5-bit `nal_unit_type` (higher bits are ignored, so a whole header byte may be passed).
    pub const fn from_u8(value: u8) -> Self {
        match value & 0x1f {
            1 => Self::NonIdrSlice,
            2 => Self::SliceDataA,
            3 => Self::SliceDataB,
            4 => Self::SliceDataC,
            5 => Self::IdrSlice,
            6 => Self::Sei,
            7 => Self::Sps,
            8 => Self::Pps,
            9 => Self::Aud,
            10 => Self::EndOfSequence,
            11 => Self::EndOfStream,
            12 => Self::Filler,
            13 => Self::SpsExtension,
            14 => Self::Prefix,
            15 => Self::SubsetSps,
            16 => Self::DepthParameterSet,
            19 => Self::AuxiliarySlice,
            20 => Self::SliceExtension,
            21 => Self::SliceExtensionDepth,
            other => Self::Other(other),
        }
    }

    /// The numeric `nal_unit_type`.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::NonIdrSlice => 1,
            Self::SliceDataA => 2,
            Self::SliceDataB => 3,
            Self::SliceDataC => 4,
            Self::IdrSlice => 5,
            Self::Sei => 6,
            Self::Sps => 7,
            Self::Pps => 8,
            Self::Aud => 9,
            Self::EndOfSequence => 10,
            Self::EndOfStream => 11,
            Self::Filler => 12,
            Self::SpsExtension => 13,
            Self::Prefix => 14,
            Self::SubsetSps => 15,
            Self::DepthParameterSet => 16,
            Self::AuxiliarySlice => 19,
            Self::SliceExtension => 20,
            Self::SliceExtensionDepth => 21,
            Self::Other(v) => v & 0x1f,
        }
    }

    /// True for NAL units that start a coded slice of the primary picture (types 1, 2 and 5).
    ///
    /// Partitions B and C (3, 4) carry the rest of a slice whose header is in partition A, so they are
    /// not counted as separate slices.
    pub const fn is_slice(self) -> bool {
        matches!(self, Self::NonIdrSlice | Self::SliceDataA | Self::IdrSlice)
    }

    /// True for VCL NAL units (types 1..=5), i.e. those carrying coded picture data.
    pub const fn is_vcl(self) -> bool {
        matches!(self, Self::NonIdrSlice | Self::SliceDataA | Self::SliceDataB | Self::SliceDataC | Self::IdrSlice)
    }
}

impl From<u8> for NalType {
    fn from(value: u8) -> Self {
        Self::from_u8(value)
    }
}

impl fmt::Display for NalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::NonIdrSlice => "non-IDR slice",
            Self::SliceDataA => "slice data partition A",
            Self::SliceDataB => "slice data partition B",
            Self::SliceDataC => "slice data partition C",
            Self::IdrSlice => "IDR slice",
            Self::Sei => "SEI",
            Self::Sps => "SPS",
            Self::Pps => "PPS",
            Self::Aud => "AUD",
            Self::EndOfSequence => "end of sequence",
            Self::EndOfStream => "end of stream",
            Self::Filler => "filler data",
            Self::SpsExtension => "SPS extension",
            Self::Prefix => "prefix NAL",
            Self::SubsetSps => "subset SPS",
            Self::DepthParameterSet => "depth parameter set",
            Self::AuxiliarySlice => "auxiliary slice",
            Self::SliceExtension => "slice extension",
            Self::SliceExtensionDepth => "depth slice extension",
            Self::Other(v) => return write!(f, "unspecified/reserved NAL type {v}"),
        };
        f.write_str(name)
    }
}

/// One NAL unit borrowed from an Annex-B stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nal<'a> {
    /// `nal_unit_type` from the header byte.
    pub nal_type: NalType,
    /// `nal_ref_idc` (0..=3) from the header byte.
    pub ref_idc: u8,
    /// The NAL unit bytes without start code and without trailing zero bytes; the 1-byte header is included,
    /// so this is never empty. Emulation-prevention bytes are still present.
    pub data: &'a [u8],
}

impl<'a> Nal<'a> {
    /// Builds a [`Nal`] from NAL bytes (header included). Returns `None` for an empty slice.
    pub fn from_bytes(data: &'a [u8]) -> Option<Self> {
        let &header = data.first()?;
        Some(Self { nal_type: NalType::from_u8(header), ref_idc: (header >> 5) & 0x03, data })
    }

    /// The NAL header byte.
    pub fn header(&self) -> u8 {
        self.data.first().copied().unwrap_or(0)
    }

    /// The bytes after the 1-byte header (still escaped; see [`unescape_rbsp`]).
    pub fn payload(&self) -> &'a [u8] {
        self.data.get(1..).unwrap_or(&[])
    }
}

/// Iterator over the NAL units of an Annex-B byte stream; see [`split_annexb`].
#[derive(Debug, Clone)]
pub struct NalIter<'a> {
    /// Remaining bytes, positioned just after a start code (or empty when exhausted).
    rest: &'a [u8],
}

impl<'a> Iterator for NalIter<'a> {
    type Item = Nal<'a>;

    fn next(&mut self) -> Option<Nal<'a>> {
        while !self.rest.is_empty() {
            let (unit, rest) = match find_start_code(self.rest) {
                Some(pos) => (self.rest.get(..pos).unwrap_or(&[]), self.rest.get(pos + 3..).unwrap_or(&[])),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            // Drops trailing_zero_8bits and the zero_byte of a following 4-byte start code. A NAL unit
            // always ends in a non-zero byte (rbsp_trailing_bits), so this never eats payload.
            if let Some(nal) = Nal::from_bytes(strip_trailing_zeros(unit)) {
                return Some(nal);
            }
        }
        None
    }
}

impl std::iter::FusedIterator for NalIter<'_> {}

/// Splits an Annex-B byte stream into NAL units.
///
/// Both 3-byte (`00 00 01`) and 4-byte (`00 00 00 01`) start codes are recognised; leading zero bytes,
/// trailing zero bytes and any garbage before the first start code are skipped, as are empty NAL units.
/// A stream without any start code yields nothing.
pub fn split_annexb(stream: &[u8]) -> NalIter<'_> {
    let rest = match find_start_code(stream) {
        Some(pos) => stream.get(pos + 3..).unwrap_or(&[]),
        None => &[],
    };
    NalIter { rest }
}

/// Index of the first byte of the first `00 00 01` in `data`.
fn find_start_code(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(&third) = data.get(i + 2) {
        match third {
            // A start code at i, i+1 or i+2 would need data[i+2] to be 0 or 1.
            2.. => i += 3,
            // A start code at i needs data[i+2] == 1; one at i+1 or i+2 is still possible.
            0 => i += 1,
            1 => {
                if data.get(i) == Some(&0) && data.get(i + 1) == Some(&0) {
                    return Some(i);
                }
                // Start codes at i+1 / i+2 would need data[i+2] == 0.
                i += 3;
            }
        }
    }
    None
}

fn strip_trailing_zeros(data: &[u8]) -> &[u8] {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    data.get(..end).unwrap_or(&[])
}

/// Removes emulation-prevention bytes: every `00 00 03` becomes `00 00` (ITU-T H.264 7.4.1).
///
/// Pass the NAL unit payload (header optional: the header byte is never part of an escape sequence
/// because it is non-zero in any valid NAL unit).
pub fn unescape_rbsp(nal_payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal_payload.len());
    let mut zeros = 0usize;
    for &byte in nal_payload {
        if zeros >= 2 && byte == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// MSB-first bit reader over an RBSP (emulation-prevention bytes must already be removed).
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// Creates a reader positioned at the first (most significant) bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Current position in bits.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Number of bits left to read.
    pub fn bits_remaining(&self) -> usize {
        self.data.len().saturating_mul(8).saturating_sub(self.pos)
    }

    fn ensure(&self, needed: usize) -> Result<(), H264Error> {
        let available = self.bits_remaining();
        if needed > available {
            return Err(H264Error::UnexpectedEnd { bit_offset: self.pos, needed, available });
        }
        Ok(())
    }

    /// Reads one bit as a flag.
    pub fn read_flag(&mut self) -> Result<bool, H264Error> {
        self.ensure(1)?;
        let byte = self.data.get(self.pos / 8).copied().unwrap_or(0);
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads `n` bits (0..=32), most significant first. Nothing is consumed on error.
    pub fn read_bits(&mut self, n: u32) -> Result<u32, H264Error> {
        if n > 32 {
            return Err(H264Error::TooManyBits(n));
        }
        self.ensure(n as usize)?;
        let mut value = 0u64;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.read_flag()?);
        }
        u32::try_from(value).map_err(|_| H264Error::TooManyBits(n))
    }

    /// Reads an 8-bit unsigned value.
    pub fn read_u8(&mut self) -> Result<u8, H264Error> {
        let v = self.read_bits(8)?;
        u8::try_from(v).map_err(|_| H264Error::TooManyBits(8))
    }

    /// Skips `n` bits.
    pub fn skip_bits(&mut self, n: usize) -> Result<(), H264Error> {
        self.ensure(n)?;
        self.pos += n;
        Ok(())
    }

    /// Reads an unsigned Exp-Golomb code, `ue(v)` (ITU-T H.264 9.1). Values up to `2^32 - 2` are supported.
    /// Nothing is consumed on error.
    pub fn read_ue(&mut self) -> Result<u32, H264Error> {
        let start = self.pos;
        let result = self.read_ue_at(start);
        if result.is_err() {
            self.pos = start;
        }
        result
    }

    fn read_ue_at(&mut self, start: usize) -> Result<u32, H264Error> {
        let mut leading_zeros = 0u32;
        while !self.read_flag()? {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return Err(H264Error::ExpGolombOverflow { bit_offset: start });
            }
        }
        let suffix = self.read_bits(leading_zeros)?;
        let value = (1u64 << leading_zeros) - 1 + u64::from(suffix);
        u32::try_from(value).map_err(|_| H264Error::ExpGolombOverflow { bit_offset: start })
    }

    /// Reads a signed Exp-Golomb code, `se(v)` (ITU-T H.264 9.1.1): 0, 1, -1, 2, -2, ...
    pub fn read_se(&mut self) -> Result<i32, H264Error> {
        let start = self.pos;
        let k = i64::from(self.read_ue()?);
        let value = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(value).map_err(|_| H264Error::ExpGolombOverflow { bit_offset: start })
    }
}

/// Profiles whose SPS carries `chroma_format_idc`, bit depths and scaling matrices (ITU-T H.264 7.3.2.1.1).
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// Constraint-byte masks (`constraint_set0_flag` is the most significant bit).
const CONSTRAINT_SET1: u8 = 0x40;
const CONSTRAINT_SET3: u8 = 0x10;
const CONSTRAINT_SET4: u8 = 0x08;
const CONSTRAINT_SET5: u8 = 0x04;

/// The fields of a sequence parameter set up to frame cropping (VUI is not parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    /// `profile_idc` (66 Baseline, 77 Main, 100 High, ...).
    pub profile_idc: u8,
    /// The whole constraint byte: `constraint_set0_flag` in bit 7 down to `constraint_set5_flag` in bit 2.
    pub constraint_flags: u8,
    /// `level_idc` (10 × level number, e.g. 31 for level 3.1).
    pub level_idc: u8,
    /// `seq_parameter_set_id` (0..=31).
    pub sps_id: u32,
    /// `chroma_format_idc`: 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4 (inferred 1 for non-high profiles).
    pub chroma_format_idc: u32,
    /// `separate_colour_plane_flag` (only for 4:4:4).
    pub separate_colour_plane: bool,
    /// Luma bit depth (8 unless a high profile says otherwise).
    pub bit_depth_luma: u8,
    /// Chroma bit depth (8 unless a high profile says otherwise).
    pub bit_depth_chroma: u8,
    /// `seq_scaling_matrix_present_flag`.
    pub seq_scaling_matrix_present: bool,
    /// `log2_max_frame_num_minus4 + 4`.
    pub log2_max_frame_num: u32,
    /// `pic_order_cnt_type` (0..=2).
    pub pic_order_cnt_type: u32,
    /// `max_num_ref_frames`.
    pub max_num_ref_frames: u32,
    /// `frame_mbs_only_flag`: false means the stream may contain field pictures / MBAFF.
    pub frame_mbs_only: bool,
    /// `mb_adaptive_frame_field_flag` (false when `frame_mbs_only`).
    pub mb_adaptive_frame_field: bool,
    /// Visible width in luma samples, after frame cropping.
    pub width: u32,
    /// Visible height in luma samples, after frame cropping.
    pub height: u32,
    /// Coded width in luma samples (a multiple of 16).
    pub coded_width: u32,
    /// Coded frame height in luma samples (a multiple of 16; of 32 when `!frame_mbs_only`).
    pub coded_height: u32,
    /// Crop offsets in luma samples: left, right, top, bottom.
    pub crop: [u32; 4],
}

impl Sps {
    /// Human-readable profile name, following the naming used by FFmpeg and ITU-T H.264 Annex A.
    pub fn profile_name(&self) -> &'static str {
        let c = self.constraint_flags;
        match self.profile_idc {
            66 if c & CONSTRAINT_SET1 != 0 => "Constrained Baseline",
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 if c & (CONSTRAINT_SET4 | CONSTRAINT_SET5) == CONSTRAINT_SET4 | CONSTRAINT_SET5 => "Constrained High",
            100 if c & CONSTRAINT_SET4 != 0 => "Progressive High",
            100 => "High",
            110 if c & CONSTRAINT_SET3 != 0 => "High 10 Intra",
            110 => "High 10",
            122 if c & CONSTRAINT_SET3 != 0 => "High 4:2:2 Intra",
            122 => "High 4:2:2",
            244 if c & CONSTRAINT_SET3 != 0 => "High 4:4:4 Intra",
            244 => "High 4:4:4 Predictive",
            44 => "CAVLC 4:4:4 Intra",
            83 => "Scalable Baseline",
            86 => "Scalable High",
            118 => "Multiview High",
            128 => "Stereo High",
            134 => "MFC High",
            135 => "MFC Depth High",
            138 => "Multiview Depth High",
            139 => "Enhanced Multiview Depth High",
            _ => "Unknown",
        }
    }

    /// True for profile_idc 66 with `constraint_set1_flag` set (Constrained Baseline, the WebRTC default).
    ///
    /// Note that RFC 6184 Table 5 also treats some Main/Extended streams with extra constraint flags as
    /// Constrained Baseline compatible; those are not reported here.
    pub fn is_constrained_baseline(&self) -> bool {
        self.profile_idc == 66 && self.constraint_flags & CONSTRAINT_SET1 != 0
    }

    /// The SDP `profile-level-id` (RFC 6184): six lowercase hex digits, e.g. `"42e01f"`.
    pub fn profile_level_id(&self) -> String {
        format!("{:02x}{:02x}{:02x}", self.profile_idc, self.constraint_flags, self.level_idc)
    }
}

fn check_range(field: &'static str, value: u32, max: u32) -> Result<u32, H264Error> {
    if value > max {
        return Err(H264Error::OutOfRange { field, value: i64::from(value) });
    }
    Ok(value)
}

/// Skips one `scaling_list()` of `size` entries (ITU-T H.264 7.3.2.1.1.1).
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), H264Error> {
    let mut last_scale: i32 = 8;
    let mut next_scale: i32 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = r.read_se()?;
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::OutOfRange { field: "delta_scale", value: i64::from(delta) });
            }
            next_scale = (last_scale + delta).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// Parses a sequence parameter set. `nal` is the SPS NAL unit *including* its 1-byte header but without a
/// start code; emulation-prevention bytes are removed here. Parsing stops after the frame-cropping fields.
pub fn parse_sps(nal: &[u8]) -> Result<Sps, H264Error> {
    let (&header, payload) = nal.split_first().ok_or(H264Error::EmptyNal)?;
    if header & 0x80 != 0 {
        return Err(H264Error::ForbiddenZeroBit(header));
    }
    let nal_type = header & 0x1f;
    if nal_type != NalType::Sps.as_u8() {
        return Err(H264Error::UnexpectedNalType { expected: NalType::Sps.as_u8(), actual: nal_type });
    }
    let rbsp = unescape_rbsp(payload);
    let mut r = BitReader::new(&rbsp);

    let profile_idc = r.read_u8()?;
    let constraint_flags = r.read_u8()?;
    let level_idc = r.read_u8()?;
    let sps_id = check_range("seq_parameter_set_id", r.read_ue()?, 31)?;

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let mut bit_depth_luma = 8;
    let mut bit_depth_chroma = 8;
    let mut seq_scaling_matrix_present = false;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = check_range("chroma_format_idc", r.read_ue()?, 3)?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.read_flag()?;
        }
        // Range 0..=6 checked, so the narrowing below cannot fail.
        let luma_minus8 = check_range("bit_depth_luma_minus8", r.read_ue()?, 6)?;
        let chroma_minus8 = check_range("bit_depth_chroma_minus8", r.read_ue()?, 6)?;
        bit_depth_luma = 8 + u8::try_from(luma_minus8).unwrap_or(0);
        bit_depth_chroma = 8 + u8::try_from(chroma_minus8).unwrap_or(0);
        let _qpprime_y_zero_transform_bypass = r.read_flag()?;
        seq_scaling_matrix_present = r.read_flag()?;
        if seq_scaling_matrix_present {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.read_flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    let log2_max_frame_num = check_range("log2_max_frame_num_minus4", r.read_ue()?, 12)? + 4;
    let pic_order_cnt_type = check_range("pic_order_cnt_type", r.read_ue()?, 2)?;
    match pic_order_cnt_type {
        0 => {
            check_range("log2_max_pic_order_cnt_lsb_minus4", r.read_ue()?, 12)?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.read_flag()?;
            let _offset_for_non_ref_pic = r.read_se()?;
            let _offset_for_top_to_bottom_field = r.read_se()?;
            let cycle = check_range("num_ref_frames_in_pic_order_cnt_cycle", r.read_ue()?, 255)?;
            for _ in 0..cycle {
                let _offset_for_ref_frame = r.read_se()?;
            }
        }
        _ => {}
    }

    let max_num_ref_frames = check_range("max_num_ref_frames", r.read_ue()?, 16)?;
    let _gaps_in_frame_num_allowed = r.read_flag()?;
    let width_mbs = u64::from(r.read_ue()?) + 1;
    let height_map_units = u64::from(r.read_ue()?) + 1;
    let frame_mbs_only = r.read_flag()?;
    let mb_adaptive_frame_field = if frame_mbs_only { false } else { r.read_flag()? };
    let _direct_8x8_inference = r.read_flag()?;

    let frame_height_mbs = height_map_units * if frame_mbs_only { 1 } else { 2 };
    let coded_width = u32::try_from(width_mbs * 16).map_err(|_| H264Error::SizeOverflow("pic_width_in_mbs"))?;
    let coded_height =
        u32::try_from(frame_height_mbs * 16).map_err(|_| H264Error::SizeOverflow("pic_height_in_map_units"))?;

    let mut crop = [0u32; 4];
    if r.read_flag()? {
        // ChromaArrayType is 0 for monochrome and for separately coded colour planes (7.4.2.1.1).
        let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
        let (sub_width_c, sub_height_c) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let frame_factor = if frame_mbs_only { 1 } else { 2 };
        let (crop_unit_x, crop_unit_y) =
            if chroma_array_type == 0 { (1u64, frame_factor) } else { (sub_width_c, sub_height_c * frame_factor) };
        let left = u64::from(r.read_ue()?) * crop_unit_x;
        let right = u64::from(r.read_ue()?) * crop_unit_x;
        let top = u64::from(r.read_ue()?) * crop_unit_y;
        let bottom = u64::from(r.read_ue()?) * crop_unit_y;
        if left + right >= u64::from(coded_width) {
            return Err(H264Error::InvalidCrop { axis: "width", crop_a: left, crop_b: right, coded: coded_width });
        }
        if top + bottom >= u64::from(coded_height) {
            return Err(H264Error::InvalidCrop { axis: "height", crop_a: top, crop_b: bottom, coded: coded_height });
        }
        // All four are below a u32 coded size, checked just above.
        for (slot, v) in crop.iter_mut().zip([left, right, top, bottom]) {
            *slot = u32::try_from(v).map_err(|_| H264Error::SizeOverflow("frame_crop_offset"))?;
        }
    }

    Ok(Sps {
        profile_idc,
        constraint_flags,
        level_idc,
        sps_id,
        chroma_format_idc,
        separate_colour_plane,
        bit_depth_luma,
        bit_depth_chroma,
        seq_scaling_matrix_present,
        log2_max_frame_num,
        pic_order_cnt_type,
        max_num_ref_frames,
        frame_mbs_only,
        mb_adaptive_frame_field,
        width: coded_width - crop[0] - crop[1],
        height: coded_height - crop[2] - crop[3],
        coded_width,
        coded_height,
        crop,
    })
}

/// Summary of the NAL units in one access unit (or any Annex-B buffer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuInfo {
    /// At least one IDR slice (type 5) is present.
    pub idr: bool,
    /// An SPS (type 7) is present.
    pub has_sps: bool,
    /// A PPS (type 8) is present.
    pub has_pps: bool,
    /// Number of coded slices (types 1, 2 and 5; see [`NalType::is_slice`]).
    pub slices: usize,
}

/// Summarises an Annex-B access unit: IDR or not, in-band parameter sets, number of slices.
pub fn access_unit_info(au: &[u8]) -> AuInfo {
    let mut info = AuInfo::default();
    for nal in split_annexb(au) {
        match nal.nal_type {
            NalType::IdrSlice => info.idr = true,
            NalType::Sps => info.has_sps = true,
            NalType::Pps => info.has_pps = true,
            _ => {}
        }
        if nal.nal_type.is_slice() {
            info.slices += 1;
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len() % 2 == 0, "odd hex length");
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Expected values for one SPS. Ground truth from `ffprobe -show_streams` (profile, level, size) and
    /// FFmpeg's `trace_headers` bitstream filter / `-debug pict` SPS dump (other fields, crop).
    struct Case {
        name: &'static str,
        hex: &'static str,
        profile_idc: u8,
        constraint_flags: u8,
        level_idc: u8,
        sps_id: u32,
        chroma_format_idc: u32,
        bit_depth: u8,
        poc_type: u32,
        refs: u32,
        frame_mbs_only: bool,
        size: (u32, u32),
        coded: (u32, u32),
        profile_name: &'static str,
        plid: &'static str,
    }

    // SPS NALs emitted by libx264 through `ffmpeg -f lavfi -i testsrc=size=WxH ... -c:v libx264 -f h264`.
    const X264_CASES: &[Case] = &[
        Case {
            name: "x264 constrained baseline 1920x1080",
            hex: "6742c028d900780227e5c044000003000400000300f03c60c920",
            profile_idc: 66,
            constraint_flags: 0xc0,
            level_idc: 40,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 2,
            refs: 3,
            frame_mbs_only: true,
            size: (1920, 1080),
            coded: (1920, 1088),
            profile_name: "Constrained Baseline",
            plid: "42c028",
        },
        Case {
            name: "x264 constrained baseline 642x362 (odd size, cropping)",
            hex: "6742c01ed900a42fe224c044000003000400000300f03c58b920",
            profile_idc: 66,
            constraint_flags: 0xc0,
            level_idc: 30,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 2,
            refs: 3,
            frame_mbs_only: true,
            size: (642, 362),
            coded: (656, 368),
            profile_name: "Constrained Baseline",
            plid: "42c01e",
        },
        Case {
            name: "x264 constrained baseline QCIF level 1b",
            hex: "6742d00bd902c4ec0440000003004000000f03c48992",
            profile_idc: 66,
            constraint_flags: 0xd0,
            level_idc: 11,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 2,
            refs: 3,
            frame_mbs_only: true,
            size: (176, 144),
            coded: (176, 144),
            profile_name: "Constrained Baseline",
            plid: "42d00b",
        },
        Case {
            name: "x264 main 1280x720",
            hex: "674d401feca02802dd8088000003000800000301e078c18cb0",
            profile_idc: 77,
            constraint_flags: 0x40,
            level_idc: 31,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: true,
            size: (1280, 720),
            coded: (1280, 720),
            profile_name: "Main",
            plid: "4d401f",
        },
        Case {
            name: "x264 high 1920x1080",
            hex: "67640028acd940780227e5c044000003000400000300f03c60c658",
            profile_idc: 100,
            constraint_flags: 0,
            level_idc: 40,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: true,
            size: (1920, 1080),
            coded: (1920, 1088),
            profile_name: "High",
            plid: "640028",
        },
        Case {
            name: "x264 high 3840x2160",
            hex: "67640033acd9403c0043ec0440000003004000000f03c60c6580",
            profile_idc: 100,
            constraint_flags: 0,
            level_idc: 51,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: true,
            size: (3840, 2160),
            coded: (3840, 2160),
            profile_name: "High",
            plid: "640033",
        },
        Case {
            name: "x264 high 10 1280x720",
            hex: "676e001fa6cd9405005bb0110000030001000003003c0f183196",
            profile_idc: 110,
            constraint_flags: 0,
            level_idc: 31,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 10,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: true,
            size: (1280, 720),
            coded: (1280, 720),
            profile_name: "High 10",
            plid: "6e001f",
        },
        Case {
            name: "x264 high 4:2:2 642x362",
            hex: "677a001ebcd940a42fe227c044000003000400000300f03c58b658",
            profile_idc: 122,
            constraint_flags: 0,
            level_idc: 30,
            sps_id: 0,
            chroma_format_idc: 2,
            bit_depth: 8,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: true,
            size: (642, 362),
            coded: (656, 368),
            profile_name: "High 4:2:2",
            plid: "7a001e",
        },
        Case {
            name: "x264 high 4:4:4 predictive 642x362",
            hex: "67f4001e919b281485fc7cf80880000003008000001e078b16cb",
            profile_idc: 244,
            constraint_flags: 0,
            level_idc: 30,
            sps_id: 0,
            chroma_format_idc: 3,
            bit_depth: 8,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: true,
            size: (642, 362),
            coded: (656, 368),
            profile_name: "High 4:4:4 Predictive",
            plid: "f4001e",
        },
        Case {
            name: "x264 high interlaced (MBAFF) 640x360",
            hex: "6764001eacd940a063f3e022000003000200000300783e28532c",
            profile_idc: 100,
            constraint_flags: 0,
            level_idc: 30,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: false,
            size: (640, 360),
            coded: (640, 384),
            profile_name: "High",
            plid: "64001e",
        },
    ];

    // Hand-built SPS NALs covering branches x264 never emits (scaling matrices in the SPS,
    // pic_order_cnt_type 1, separate colour planes, monochrome, emulation prevention inside parsed fields).
    // Each one was checked with FFmpeg's cbs `trace_headers` filter and, where FFmpeg's decoder supports
    // it, with `ffmpeg -debug pict`, which printed the same size and crop.
    const CRAFTED_CASES: &[Case] = &[
        Case {
            // 8 scaling lists: explicit, useDefault, absent, flat, early-terminated (nextScale == 0).
            name: "high 320x240 with SPS scaling matrix",
            hex: "6764000dad94c6318c6318c6318c63422843fffc302005081c14905e11d94141f9",
            profile_idc: 100,
            constraint_flags: 0,
            level_idc: 13,
            sps_id: 0,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: true,
            size: (320, 240),
            coded: (320, 240),
            profile_name: "High",
            plid: "64000d",
        },
        Case {
            // 12 scaling lists (4:4:4), including a full 64-entry 8x8 list.
            name: "high 4:4:4 642x362 with 12 scaling lists",
            hex: "67f4001e91b087fff42309023421fffe0b01c961158f843fffffffffffffffc23b281485fc7ce8",
            profile_idc: 244,
            constraint_flags: 0,
            level_idc: 30,
            sps_id: 0,
            chroma_format_idc: 3,
            bit_depth: 8,
            poc_type: 0,
            refs: 4,
            frame_mbs_only: true,
            size: (642, 362),
            coded: (656, 368),
            profile_name: "High 4:4:4 Predictive",
            plid: "f4001e",
        },
        Case {
            // pic_order_cnt_type 1 with a 3-entry cycle, sps_id 3, crop 2/2/4/2.
            name: "main poc type 1 cropped to 1276x714",
            hex: "674d401f23439088a2980a00b7a4d2",
            profile_idc: 77,
            constraint_flags: 0x40,
            level_idc: 31,
            sps_id: 3,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 1,
            refs: 2,
            frame_mbs_only: true,
            size: (1276, 714),
            coded: (1280, 720),
            profile_name: "Main",
            plid: "4d401f",
        },
        Case {
            // poc type 1 with large offsets whose Exp-Golomb codes need an emulation-prevention byte.
            name: "constrained baseline poc type 1 with emulation prevention 640x480",
            hex: "6742c01e5500004000000300088b85800020000680a03d90",
            profile_idc: 66,
            constraint_flags: 0xc0,
            level_idc: 30,
            sps_id: 1,
            chroma_format_idc: 1,
            bit_depth: 8,
            poc_type: 1,
            refs: 1,
            frame_mbs_only: true,
            size: (640, 480),
            coded: (640, 480),
            profile_name: "Constrained Baseline",
            plid: "42c01e",
        },
        Case {
            // 4:4:4 separate colour planes (ChromaArrayType 0), 10-bit, MBAFF, crop 1/2/1/3 units.
            name: "high 4:4:4 separate colour planes 61x56",
            hex: "67f4001e104b70d611913a6888",
            profile_idc: 244,
            constraint_flags: 0,
            level_idc: 30,
            sps_id: 7,
            chroma_format_idc: 3,
            bit_depth: 10,
            poc_type: 2,
            refs: 16,
            frame_mbs_only: false,
            size: (61, 56),
            coded: (64, 64),
            profile_name: "High 4:4:4 Predictive",
            plid: "f4001e",
        },
        Case {
            // 4:2:2 interlaced: CropUnitX 2, CropUnitY 2.
            name: "high 4:2:2 interlaced 58x56",
            hex: "677a001e10f06b08c89d3444",
            profile_idc: 122,
            constraint_flags: 0,
            level_idc: 30,
            sps_id: 7,
            chroma_format_idc: 2,
            bit_depth: 8,
            poc_type: 2,
            refs: 16,
            frame_mbs_only: false,
            size: (58, 56),
            coded: (64, 64),
            profile_name: "High 4:2:2",
            plid: "7a001e",
        },
        Case {
            // Monochrome (chroma_format_idc 0): CropUnitX 1, CropUnitY 2 when interlaced.
            name: "high monochrome interlaced 61x56",
            hex: "6764001e11c1ac232274d110",
            profile_idc: 100,
            constraint_flags: 0,
            level_idc: 30,
            sps_id: 7,
            chroma_format_idc: 0,
            bit_depth: 8,
            poc_type: 2,
            refs: 16,
            frame_mbs_only: false,
            size: (61, 56),
            coded: (64, 64),
            profile_name: "High",
            plid: "64001e",
        },
    ];

    fn check_case(c: &Case) {
        let sps = parse_sps(&hex(c.hex)).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(sps.profile_idc, c.profile_idc, "{}", c.name);
        assert_eq!(sps.constraint_flags, c.constraint_flags, "{}", c.name);
        assert_eq!(sps.level_idc, c.level_idc, "{}", c.name);
        assert_eq!(sps.sps_id, c.sps_id, "{}", c.name);
        assert_eq!(sps.chroma_format_idc, c.chroma_format_idc, "{}", c.name);
        assert_eq!(sps.bit_depth_luma, c.bit_depth, "{}", c.name);
        assert_eq!(sps.bit_depth_chroma, c.bit_depth, "{}", c.name);
        assert_eq!(sps.pic_order_cnt_type, c.poc_type, "{}", c.name);
        assert_eq!(sps.max_num_ref_frames, c.refs, "{}", c.name);
        assert_eq!(sps.frame_mbs_only, c.frame_mbs_only, "{}", c.name);
        assert_eq!((sps.width, sps.height), c.size, "{}", c.name);
        assert_eq!((sps.coded_width, sps.coded_height), c.coded, "{}", c.name);
        assert_eq!(sps.profile_name(), c.profile_name, "{}", c.name);
        assert_eq!(sps.profile_level_id(), c.plid, "{}", c.name);
        assert_eq!(sps.is_constrained_baseline(), c.profile_name == "Constrained Baseline", "{}", c.name);
    }

    #[test]
    fn parses_x264_sps() {
        for c in X264_CASES {
            check_case(c);
        }
    }

    #[test]
    fn parses_crafted_sps() {
        for c in CRAFTED_CASES {
            check_case(c);
        }
    }

    #[test]
    fn sps_detail_fields() {
        let cb = parse_sps(&hex(X264_CASES[1].hex)).unwrap();
        assert_eq!(cb.crop, [0, 14, 0, 6]);
        assert_eq!(cb.log2_max_frame_num, 4);
        assert!(!cb.seq_scaling_matrix_present);
        assert!(!cb.mb_adaptive_frame_field);

        let interlaced = parse_sps(&hex(X264_CASES[9].hex)).unwrap();
        assert!(interlaced.mb_adaptive_frame_field);
        assert_eq!(interlaced.crop, [0, 0, 0, 24]);

        let scaling = parse_sps(&hex(CRAFTED_CASES[0].hex)).unwrap();
        assert!(scaling.seq_scaling_matrix_present);

        let poc1 = parse_sps(&hex(CRAFTED_CASES[2].hex)).unwrap();
        assert_eq!(poc1.crop, [2, 2, 4, 2]);
        assert_eq!(poc1.log2_max_frame_num, 6);

        let sep = parse_sps(&hex(CRAFTED_CASES[4].hex)).unwrap();
        assert!(sep.separate_colour_plane);
        assert!(sep.mb_adaptive_frame_field);
        assert_eq!(sep.log2_max_frame_num, 16);
        assert_eq!(sep.crop, [1, 2, 2, 6]);

        assert_eq!(parse_sps(&hex(CRAFTED_CASES[5].hex)).unwrap().crop, [2, 4, 2, 6]);
    }

    #[test]
    fn profile_names_and_plid() {
        let mut sps = parse_sps(&hex(X264_CASES[0].hex)).unwrap();
        let mut name = |p: u8, c: u8| {
            sps.profile_idc = p;
            sps.constraint_flags = c;
            (sps.profile_name(), sps.is_constrained_baseline(), sps.profile_level_id())
        };
        assert_eq!(name(66, 0xe0), ("Constrained Baseline", true, "42e028".to_string()));
        assert_eq!(name(66, 0x80), ("Baseline", false, "428028".to_string()));
        assert_eq!(name(77, 0x00).0, "Main");
        assert_eq!(name(88, 0x00).0, "Extended");
        assert_eq!(name(100, 0x0c), ("Constrained High", false, "640c28".to_string()));
        assert_eq!(name(100, 0x08).0, "Progressive High");
        assert_eq!(name(110, 0x10).0, "High 10 Intra");
        assert_eq!(name(122, 0x10).0, "High 4:2:2 Intra");
        assert_eq!(name(244, 0x10).0, "High 4:4:4 Intra");
        assert_eq!(name(44, 0x00).0, "CAVLC 4:4:4 Intra");
        assert_eq!(name(128, 0x00).0, "Stereo High");
        assert_eq!(name(1, 0x00).0, "Unknown");
        sps.profile_idc = 0x42;
        sps.constraint_flags = 0xe0;
        sps.level_idc = 0x1f;
        assert_eq!(sps.profile_level_id(), "42e01f");
    }

    #[test]
    fn emulation_prevention_removed() {
        assert_eq!(unescape_rbsp(&[0, 0, 3, 1]), [0, 0, 1]);
        assert_eq!(unescape_rbsp(&[0, 0, 3, 0, 0, 3]), [0, 0, 0, 0]);
        assert_eq!(unescape_rbsp(&[0, 0, 3, 3]), [0, 0, 3]);
        assert_eq!(unescape_rbsp(&[0, 0, 0, 3]), [0, 0, 0]);
        assert_eq!(unescape_rbsp(&[0, 3, 0, 3]), [0, 3, 0, 3]);
        assert_eq!(unescape_rbsp(&[1, 0, 0, 2, 0, 0, 3, 0]), [1, 0, 0, 2, 0, 0, 0]);
        assert_eq!(unescape_rbsp(&[]), Vec::<u8>::new());
        // Real x264 SPS: 44 00 00 03 00 04 00 00 03 00 f0 → 44 00 00 00 04 00 00 00 f0.
        let sps = hex(X264_CASES[0].hex);
        let rbsp = unescape_rbsp(&sps);
        assert_eq!(rbsp.len(), sps.len() - 2);
        assert!(rbsp.windows(4).any(|w| w == [0x44, 0, 0, 0]));
        // The crafted SPS whose parsed fields contain an escape only parses correctly when unescaped.
        let escaped = hex(CRAFTED_CASES[3].hex);
        assert!(escaped.windows(3).any(|w| w == [0, 0, 3]));
        assert_eq!(unescape_rbsp(&escaped).len(), escaped.len() - 1);
    }

    #[test]
    fn bit_reader_basics() {
        let data = [0b1010_1100, 0xff, 0x00, 0x12, 0x34];
        let mut r = BitReader::new(&data);
        assert!(r.read_flag().unwrap());
        assert_eq!(r.read_bits(3).unwrap(), 0b010);
        assert_eq!(r.read_bits(0).unwrap(), 0);
        assert_eq!(r.read_bits(12).unwrap(), 0b1100_1111_1111);
        assert_eq!(r.position(), 16);
        assert_eq!(r.read_bits(24).unwrap(), 0x001234);
        assert_eq!(r.bits_remaining(), 0);
        assert!(matches!(r.read_flag(), Err(H264Error::UnexpectedEnd { bit_offset: 40, needed: 1, available: 0 })));

        let mut r = BitReader::new(&[0xde, 0xad, 0xbe, 0xef, 0x01]);
        assert_eq!(r.read_bits(33), Err(H264Error::TooManyBits(33)));
        assert_eq!(r.read_bits(32).unwrap(), 0xdead_beef);
        assert!(r.read_bits(9).is_err());
        assert_eq!(r.position(), 32, "failed read must not consume");
        assert_eq!(r.read_u8().unwrap(), 1);
        assert!(r.skip_bits(1).is_err());
    }

    #[test]
    fn exp_golomb() {
        // Table 9-2: 1 → 0, 010 → 1, 011 → 2, 00100 → 3, 00101 → 4, 00110 → 5, 00111 → 6, 0001000 → 7.
        // Bits: 1 010 011 00100 00101 00110 00111 0001000 + padding 1.
        let bits = "1010011001000010100110001110001000";
        let mut bytes = vec![0u8; bits.len().div_ceil(8)];
        for (i, b) in bits.bytes().enumerate() {
            if b == b'1' {
                bytes[i / 8] |= 0x80 >> (i % 8);
            }
        }
        let mut r = BitReader::new(&bytes);
        for expect in 0..=7 {
            assert_eq!(r.read_ue().unwrap(), expect);
        }
        let mut r = BitReader::new(&bytes);
        for expect in [0, 1, -1, 2, -2, 3, -3, 4] {
            assert_eq!(r.read_se().unwrap(), expect);
        }

        // 31 leading zeros + 1 + 31 ones = 2^32 - 2, the largest ue(v).
        let max = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe];
        assert_eq!(BitReader::new(&max).read_ue().unwrap(), u32::MAX - 1);
        assert_eq!(BitReader::new(&max).read_se().unwrap(), -i32::MAX);
        // 2^32 - 3 is the largest odd code number: se = 2^31 - 1.
        let odd = [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfc];
        assert_eq!(BitReader::new(&odd).read_ue().unwrap(), u32::MAX - 2);
        assert_eq!(BitReader::new(&odd).read_se().unwrap(), i32::MAX);
        // 32 leading zeros cannot be represented.
        let too_long = [0, 0, 0, 0, 0x80, 0, 0, 0, 0];
        assert_eq!(BitReader::new(&too_long).read_ue(), Err(H264Error::ExpGolombOverflow { bit_offset: 0 }));
        // All zeros / truncated suffix → error, position restored.
        let mut r = BitReader::new(&[0, 0]);
        assert!(r.read_ue().is_err());
        assert_eq!(r.position(), 0);
        let mut r = BitReader::new(&[0b0000_0100]);
        assert!(matches!(r.read_ue(), Err(H264Error::UnexpectedEnd { .. })));
        assert_eq!(r.position(), 0);
        assert!(BitReader::new(&[]).read_se().is_err());
    }

    /// A real 125-byte stream: `ffmpeg -f lavfi -i color=c=gray:size=32x32 -frames:v 3 -c:v libx264
    /// -profile:v baseline -x264-params aud=1:keyint=2 -bsf:v filter_units=remove_types=6 -f h264`.
    /// Three access units: AUD SPS PPS IDR | AUD P | AUD SPS PPS IDR, mixing 4- and 3-byte start codes.
    const TINY_STREAM: &str = "000000010910000000016742c00ad9096c0440000003004000000f03c489920000000168cb83cb2000000165888\
        40bf2628001993aebc0000000010930000001419a3815e580000000010910000000016742c00ad9096c0440000003004000000f03c48\
        9920000000168cb83cb2000000165888202bc98a0005e4ebaf0";

    #[test]
    fn split_real_stream() {
        let stream = hex(TINY_STREAM);
        assert_eq!(stream.len(), 125);
        let nals: Vec<Nal<'_>> = split_annexb(&stream).collect();
        let types: Vec<u8> = nals.iter().map(|n| n.nal_type.as_u8()).collect();
        assert_eq!(types, [9, 7, 8, 5, 9, 1, 9, 7, 8, 5]);
        assert_eq!(nals[0].data, [0x09, 0x10]);
        assert_eq!(nals[0].ref_idc, 0);
        assert_eq!(nals[1].ref_idc, 3);
        assert_eq!(nals[2].data, hex("68cb83cb20"));
        assert_eq!(nals[3].nal_type, NalType::IdrSlice);
        assert_eq!(nals[5].nal_type, NalType::NonIdrSlice);
        assert_eq!(nals[5].ref_idc, 2);
        assert_eq!(nals[9].data.last(), Some(&0xf0));
        let sps = parse_sps(nals[1].data).unwrap();
        assert_eq!((sps.width, sps.height, sps.level_idc), (32, 32, 10));
        assert!(sps.is_constrained_baseline());
        assert_eq!(sps.max_num_ref_frames, 3);
        assert_eq!(nals.iter().map(|n| n.data.len() + 3).sum::<usize>() + 7, stream.len(), "7 four-byte start codes");
    }

    #[test]
    fn access_units() {
        let stream = hex(TINY_STREAM);
        // Access-unit boundaries are the AUDs (NAL type 9).
        let starts: Vec<usize> = (0..stream.len() - 4).filter(|&i| stream[i..i + 5] == [0, 0, 0, 1, 0x09]).collect();
        assert_eq!(starts.len(), 3);
        let au0 = access_unit_info(&stream[starts[0]..starts[1]]);
        assert_eq!(au0, AuInfo { idr: true, has_sps: true, has_pps: true, slices: 1 });
        let au1 = access_unit_info(&stream[starts[1]..starts[2]]);
        assert_eq!(au1, AuInfo { idr: false, has_sps: false, has_pps: false, slices: 1 });
        let au2 = access_unit_info(&stream[starts[2]..]);
        assert_eq!(au2, au0);
        assert_eq!(access_unit_info(&stream).slices, 3);
        assert_eq!(access_unit_info(&[]), AuInfo::default());
        // Multi-slice IDR with SEI and filler.
        let au = [0, 0, 0, 1, 0x06, 0x05, 0x80, 0, 0, 1, 0x65, 0x88, 0, 0, 1, 0x65, 0xb8, 0, 0, 1, 0x0c, 0xff, 0x80];
        assert_eq!(access_unit_info(&au), AuInfo { idr: true, has_sps: false, has_pps: false, slices: 2 });
    }

    #[test]
    fn split_edge_cases() {
        let collect = |s: &[u8]| split_annexb(s).map(|n| n.data.to_vec()).collect::<Vec<_>>();
        assert!(collect(&[]).is_empty());
        assert!(collect(&[0, 0, 0, 0]).is_empty());
        assert!(collect(&[0, 0, 1]).is_empty());
        assert!(collect(&[0, 0, 0, 1, 0, 0]).is_empty());
        assert!(collect(&[0x67, 0x42, 0x00]).is_empty(), "no start code: nothing");
        // 3-byte start codes.
        assert_eq!(collect(&[0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x68, 0xce]), [vec![0x09, 0xf0], vec![0x68, 0xce]]);
        // 4-byte start codes, extra leading zeros, trailing_zero_8bits between and after units.
        assert_eq!(
            collect(&[0, 0, 0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0]),
            [vec![0x67, 0x42], vec![0x68, 0xce]]
        );
        // Garbage before the first start code is skipped, including bytes that look almost like one.
        assert_eq!(collect(&[0xff, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0, 0, 1, 0x65, 0x88]), [vec![0x65, 0x88]]);
        // Empty units between back-to-back start codes are dropped.
        assert_eq!(collect(&[0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0x06, 0x01]), [vec![0x06, 0x01]]);
        // Escaped data (00 00 03) is not a start code and stays in the NAL.
        assert_eq!(collect(&[0, 0, 1, 0x41, 0, 0, 3, 1, 0x80]), [vec![0x41, 0, 0, 3, 1, 0x80]]);
        // A start code whose 00 00 overlaps data ending in zero bytes.
        assert_eq!(collect(&[0, 0, 1, 0x41, 0x80, 0, 0, 0, 0, 1, 0x0c]), [vec![0x41, 0x80], vec![0x0c]]);
        // Header fields.
        let nal = split_annexb(&[0, 0, 1, 0x65, 0x88]).next().unwrap();
        assert_eq!((nal.nal_type, nal.ref_idc, nal.header(), nal.payload()), (NalType::IdrSlice, 3, 0x65, &[0x88][..]));
        let nal = split_annexb(&[0, 0, 1, 0x0c]).next().unwrap();
        assert_eq!((nal.nal_type, nal.ref_idc, nal.payload()), (NalType::Filler, 0, &[][..]));
    }

    #[test]
    fn nal_type_round_trip() {
        for v in 0..=31u8 {
            let t = NalType::from_u8(v);
            assert_eq!(t.as_u8(), v);
            assert_eq!(NalType::from(v | 0x60), t, "header bits above the type are ignored");
            assert!(!t.to_string().is_empty());
        }
        assert_eq!(NalType::from_u8(1), NalType::NonIdrSlice);
        assert_eq!(NalType::from_u8(5), NalType::IdrSlice);
        assert_eq!(NalType::from_u8(6), NalType::Sei);
        assert_eq!(NalType::from_u8(7), NalType::Sps);
        assert_eq!(NalType::from_u8(8), NalType::Pps);
        assert_eq!(NalType::from_u8(9), NalType::Aud);
        assert_eq!(NalType::from_u8(12), NalType::Filler);
        assert_eq!(NalType::from_u8(0), NalType::Other(0));
        assert!(NalType::IdrSlice.is_slice() && NalType::IdrSlice.is_vcl());
        assert!(!NalType::SliceDataB.is_slice() && NalType::SliceDataB.is_vcl());
        assert!(!NalType::Sps.is_vcl());
    }

    #[test]
    fn sps_errors() {
        assert_eq!(parse_sps(&[]), Err(H264Error::EmptyNal));
        assert_eq!(parse_sps(&[0x68, 0xce]), Err(H264Error::UnexpectedNalType { expected: 7, actual: 8 }));
        assert_eq!(parse_sps(&[0xe7, 0x42]), Err(H264Error::ForbiddenZeroBit(0xe7)));
        // With the start code still attached the header byte is 0x00.
        let mut with_start_code = vec![0, 0, 0, 1];
        with_start_code.extend(hex(X264_CASES[0].hex));
        assert!(matches!(parse_sps(&with_start_code), Err(H264Error::UnexpectedNalType { actual: 0, .. })));
        // Truncated: cut inside the size fields of the 1080p SPS.
        let full = hex(X264_CASES[0].hex);
        assert!(matches!(parse_sps(&full[..6]), Err(H264Error::UnexpectedEnd { .. })));
        assert!(matches!(parse_sps(&full[..1]), Err(H264Error::UnexpectedEnd { .. })));
        // Out of range: sps_id 32 (ue 000001 00001), baseline.
        let bad_id = [0x67, 0x42, 0xc0, 0x1e, 0b0000_0100, 0b0010_0000];
        assert_eq!(parse_sps(&bad_id), Err(H264Error::OutOfRange { field: "seq_parameter_set_id", value: 32 }));
        // Out of range: pic_order_cnt_type 3 (ue 00100) after sps_id 0 and log2_max_frame_num_minus4 0.
        let bad_poc = [0x67, 0x42, 0xc0, 0x1e, 0b1100_1000];
        assert_eq!(parse_sps(&bad_poc), Err(H264Error::OutOfRange { field: "pic_order_cnt_type", value: 3 }));
        // Crop that removes the whole picture: 16x16, frame_crop_left_offset 8 (ue 0001001) → 16 samples.
        // Bits: id 1, lmfn 1, poc 011, refs 010, gaps 0, w 1, h 1, fmo 1, d8 1, crop 1, 0001001 1 1 1, stop 1.
        let bad_crop = [0x67, 0x42, 0xc0, 0x0a, 0b1101_1010, 0b0111_1100, 0b0100_1111, 0b1000_0000];
        assert!(matches!(parse_sps(&bad_crop), Err(H264Error::InvalidCrop { axis: "width", .. })));
        // Huge width: pic_width_in_mbs_minus1 = 2^32 - 2 overflows 32-bit luma width.
        // Bits: id 1, lmfn 1, poc 011, refs 010 | gaps 0 + 31 zeros | 1 + 31 ones | h 1, fmo 1, d8 1, crop 0, stop 1.
        let huge = [0x67, 0x42, 0xc0, 0x0a, 0b1101_1010, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0b1110_1000];
        assert_eq!(parse_sps(&huge), Err(H264Error::SizeOverflow("pic_width_in_mbs")));
        // Error messages are human readable.
        assert!(H264Error::EmptyNal.to_string().contains("empty"));
        assert!(parse_sps(&full[..6]).unwrap_err().to_string().contains("truncated"));
    }

    /// xorshift64*, deterministic and dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn no_panic_on_prefixes_and_noise() {
        for c in X264_CASES.iter().chain(CRAFTED_CASES) {
            let full = hex(c.hex);
            for len in 0..=full.len() {
                let prefix = &full[..len];
                let _ = parse_sps(prefix);
                let _ = split_annexb(prefix).count();
                let _ = access_unit_info(prefix);
            }
            // Truncating before the frame-cropping fields must be an error, never a bogus Ok.
            assert!(parse_sps(&full[..5]).is_err(), "{}", c.name);
        }
        let stream = hex(TINY_STREAM);
        for len in 0..=stream.len() {
            for nal in split_annexb(&stream[..len]) {
                assert!(!nal.data.is_empty());
                assert_ne!(nal.data.last(), Some(&0));
            }
        }

        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards interesting bytes: zeros make start codes and long Exp-Golomb prefixes.
            for b in buf.iter_mut() {
                if rng.next() % 3 == 0 {
                    *b = (rng.next() % 4) as u8;
                }
            }
            if let Some(first) = buf.first_mut() {
                if round % 2 == 0 {
                    *first = 0x67;
                }
            }
            if let Ok(sps) = parse_sps(&buf) {
                assert!(sps.width >= 1 && sps.width <= sps.coded_width);
                assert!(sps.height >= 1 && sps.height <= sps.coded_height);
                let _ = (sps.profile_name(), sps.profile_level_id());
            }
            for nal in split_annexb(&buf) {
                assert!(!nal.data.is_empty());
                let _ = unescape_rbsp(nal.payload());
            }
            let _ = access_unit_info(&buf);
            let rbsp = unescape_rbsp(&buf);
            let mut r = BitReader::new(&rbsp);
            while r.read_se().is_ok() {}
        }
    }
}
