//! H.264 parameter sets written by us (ITU-T H.264 §7.3.2.1, §7.3.2.2, Annex E) for encoders that write only
//! slices: VA-API drivers without packed headers (the `VAEncSequenceParameterBufferH264` a driver gets
//! carries the same values, so its slice headers agree with what we write here).
//!
//! What we write: CAVLC (Constrained Baseline) or CABAC (Main/High), frames only, POC type 2 (output order is
//! decode order: no B-frames), one reference frame, BT.709 limited range, and a bitstream restriction saying
//! no frame is ever reordered or held (decoders output each frame at once).

/// An MSB-first bit writer with Exp-Golomb codes.
#[derive(Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    acc: u8,
    n: u8,
}

impl BitWriter {
    pub fn bits(&mut self, value: u32, n: u32) {
        for i in (0..n).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1) as u8;
            self.n += 1;
            if self.n == 8 {
                self.bytes.push(self.acc);
                (self.acc, self.n) = (0, 0);
            }
        }
    }

    pub fn flag(&mut self, on: bool) {
        self.bits(u32::from(on), 1);
    }

    pub fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 63 - x.leading_zeros();
        self.bits(0, len);
        // `len + 1` bits of x: at most 33, in two parts.
        if len >= 32 {
            self.bits((x >> 32) as u32, len - 31);
            self.bits(x as u32, 32);
        } else {
            self.bits(x as u32, len + 1);
        }
    }

    pub fn se(&mut self, v: i32) {
        let mapped = if v > 0 { 2 * i64::from(v) - 1 } else { -2 * i64::from(v) };
        self.ue(mapped as u32);
    }

    /// `rbsp_trailing_bits`: a stop bit, then zeros to the byte boundary.
    pub fn trailing(mut self) -> Vec<u8> {
        self.bits(1, 1);
        while self.n != 0 {
            self.bits(0, 1);
        }
        self.bytes
    }
}

/// Append `rbsp` as an Annex-B NAL unit (4-byte start code, header byte, emulation prevention).
pub fn push_nal(out: &mut Vec<u8>, header: u8, rbsp: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1, header]);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros == 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

/// H.264 profiles we write, with `profile_idc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Profile {
    ConstrainedBaseline,
    Main,
    High,
}

impl H264Profile {
    pub fn idc(self) -> u8 {
        match self {
            H264Profile::ConstrainedBaseline => 66,
            H264Profile::Main => 77,
            H264Profile::High => 100,
        }
    }

    /// constraint_set0..5 flags as the byte after `profile_idc` (what SDP's profile-level-id carries).
    pub fn constraints(self) -> u8 {
        match self {
            // constraint_set0 + set1 (+ set2, as every WebRTC stack sends 42e0xx)
            H264Profile::ConstrainedBaseline => 0xe0,
            H264Profile::Main => 0x40,
            H264Profile::High => 0x00,
        }
    }

    /// CABAC where the profile has it.
    pub fn cabac(self) -> bool {
        self != H264Profile::ConstrainedBaseline
    }
}

/// The sequence: what the SPS, the PPS and the driver's sequence/picture parameters share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    pub profile: H264Profile,
    pub level_idc: u8,
    /// Macroblocks across and down.
    pub mb_width: u32,
    pub mb_height: u32,
    /// The stream's (even) size; the rest of the macroblock grid is cropped.
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub log2_max_frame_num: u32,
    /// PPS `pic_init_qp`.
    pub pic_init_qp: u8,
}

/// `log2_max_frame_num` we use: frame_num counts 0..255 and wraps (only the previous frame is referenced).
pub const LOG2_MAX_FRAME_NUM: u32 = 8;

impl Sequence {
    pub fn new(profile: H264Profile, width: u32, height: u32, fps: u32) -> Sequence {
        let (w, h) = (width.next_multiple_of(2), height.next_multiple_of(2));
        let (mb_width, mb_height) = (w.div_ceil(16), h.div_ceil(16));
        Sequence {
            profile,
            level_idc: level_for(mb_width * mb_height, fps),
            mb_width,
            mb_height,
            width: w,
            height: h,
            fps: fps.max(1),
            log2_max_frame_num: LOG2_MAX_FRAME_NUM,
            pic_init_qp: 26,
        }
    }

    /// `frame_crop_right_offset`, `frame_crop_bottom_offset` (units of 2 samples in 4:2:0).
    pub fn crop(&self) -> (u32, u32) {
        ((self.mb_width * 16 - self.width) / 2, (self.mb_height * 16 - self.height) / 2)
    }

    /// The SPS NAL unit (Annex B).
    pub fn sps(&self) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.bits(u32::from(self.profile.idc()), 8);
        w.bits(u32::from(self.profile.constraints()), 8);
        w.bits(u32::from(self.level_idc), 8);
        w.ue(0); // seq_parameter_set_id
        if self.profile == H264Profile::High {
            w.ue(1); // chroma_format_idc 4:2:0
            w.ue(0); // bit_depth_luma_minus8
            w.ue(0); // bit_depth_chroma_minus8
            w.flag(false); // qpprime_y_zero_transform_bypass_flag
            w.flag(false); // seq_scaling_matrix_present_flag
        }
        w.ue(self.log2_max_frame_num - 4);
        w.ue(2); // pic_order_cnt_type: POC from frame_num
        w.ue(1); // max_num_ref_frames
        w.flag(false); // gaps_in_frame_num_value_allowed_flag
        w.ue(self.mb_width - 1);
        w.ue(self.mb_height - 1);
        w.flag(true); // frame_mbs_only_flag
        w.flag(true); // direct_8x8_inference_flag
        let (crop_right, crop_bottom) = self.crop();
        let crop = crop_right != 0 || crop_bottom != 0;
        w.flag(crop);
        if crop {
            w.ue(0);
            w.ue(crop_right);
            w.ue(0);
            w.ue(crop_bottom);
        }
        w.flag(true); // vui_parameters_present_flag
        self.vui(&mut w);
        let mut out = Vec::new();
        push_nal(&mut out, 0x67, &w.trailing());
        out
    }

    fn vui(&self, w: &mut BitWriter) {
        w.flag(false); // aspect_ratio_info_present_flag (square pixels are the default)
        w.flag(false); // overscan_info_present_flag
        w.flag(true); // video_signal_type_present_flag
        w.bits(5, 3); // video_format: unspecified
        w.flag(false); // video_full_range_flag: limited
        w.flag(true); // colour_description_present_flag
        w.bits(1, 8); // colour_primaries BT.709
        w.bits(1, 8); // transfer_characteristics BT.709
        w.bits(1, 8); // matrix_coefficients BT.709
        w.flag(false); // chroma_loc_info_present_flag
        w.flag(true); // timing_info_present_flag
        w.bits(1, 32); // num_units_in_tick
        w.bits(self.fps * 2, 32); // time_scale (a frame is two ticks)
        w.flag(false); // fixed_frame_rate_flag: captured frames come when the screen changes
        w.flag(false); // nal_hrd_parameters_present_flag
        w.flag(false); // vcl_hrd_parameters_present_flag
        w.flag(false); // pic_struct_present_flag
        w.flag(true); // bitstream_restriction_flag
        w.flag(true); // motion_vectors_over_pic_boundaries_flag
        w.ue(0); // max_bytes_per_pic_denom
        w.ue(0); // max_bits_per_mb_denom
        w.ue(16); // log2_max_mv_length_horizontal
        w.ue(16); // log2_max_mv_length_vertical
        w.ue(0); // max_num_reorder_frames: output at once
        w.ue(1); // max_dec_frame_buffering: the one reference
    }

    /// The PPS NAL unit (Annex B).
    pub fn pps(&self) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.ue(0); // pic_parameter_set_id
        w.ue(0); // seq_parameter_set_id
        w.flag(self.profile.cabac()); // entropy_coding_mode_flag
        w.flag(false); // bottom_field_pic_order_in_frame_present_flag
        w.ue(0); // num_slice_groups_minus1
        w.ue(0); // num_ref_idx_l0_default_active_minus1
        w.ue(0); // num_ref_idx_l1_default_active_minus1
        w.flag(false); // weighted_pred_flag
        w.bits(0, 2); // weighted_bipred_idc
        w.se(i32::from(self.pic_init_qp) - 26); // pic_init_qp_minus26
        w.se(0); // pic_init_qs_minus26
        w.se(0); // chroma_qp_index_offset
        w.flag(true); // deblocking_filter_control_present_flag
        w.flag(false); // constrained_intra_pred_flag
        w.flag(false); // redundant_pic_cnt_present_flag
        let mut out = Vec::new();
        push_nal(&mut out, 0x68, &w.trailing());
        out
    }
}

/// The lowest level (Table A-1) whose frame size and macroblock rate fit; 5.2 beyond.
pub fn level_for(mbs_per_frame: u32, fps: u32) -> u8 {
    const LEVELS: [(u8, u32, u32); 11] = [
        (30, 1620, 40_500),
        (31, 3600, 108_000),
        (32, 5120, 216_000),
        (40, 8192, 245_760),
        (42, 8704, 522_240),
        (50, 22_080, 589_824),
        (51, 36_864, 983_040),
        (52, 36_864, 2_073_600),
        (60, 139_264, 4_177_920),
        (61, 139_264, 8_355_840),
        (62, 139_264, 16_711_680),
    ];
    let rate = mbs_per_frame.saturating_mul(fps.max(1));
    LEVELS.iter().find(|&&(_, size, mbps)| mbs_per_frame <= size && rate <= mbps).map_or(62, |l| l.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes_match_the_spec_table() {
        let mut w = BitWriter::default();
        // ue: 0 -> 1, 1 -> 010, 2 -> 011, 3 -> 00100; se: 1 -> 010, -1 -> 011
        for v in [0, 1, 2, 3] {
            w.ue(v);
        }
        w.se(1);
        w.se(-1);
        // 1 010 011 00100 010 011 + stop bit 1 + 0 padding
        assert_eq!(w.trailing(), vec![0b1010_0110, 0b0100_0100, 0b1110_0000]);
        let mut big = BitWriter::default();
        big.ue(u32::MAX);
        assert_eq!(big.trailing().len(), 9, "65 bits + stop bit");
    }

    #[test]
    fn emulation_prevention_escapes_start_code_prefixes() {
        let mut out = Vec::new();
        push_nal(&mut out, 0x65, &[0, 0, 1, 0, 0, 0, 0, 0, 4]);
        assert_eq!(out, vec![0, 0, 0, 1, 0x65, 0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 4]);
    }

    #[test]
    fn levels_follow_table_a1() {
        assert_eq!(level_for(3600, 30), 31, "720p30");
        assert_eq!(level_for(8160, 30), 40, "1080p30");
        assert_eq!(level_for(8160, 60), 42, "1080p60");
        assert_eq!(level_for(32_400, 30), 51, "4K30");
        assert_eq!(level_for(32_400, 60), 52, "4K60");
        assert_eq!(level_for(300, 30), 30);
    }

    #[test]
    fn odd_sizes_are_cropped_from_the_macroblock_grid() {
        let s = Sequence::new(H264Profile::ConstrainedBaseline, 1919, 1081, 60);
        assert_eq!((s.width, s.height, s.mb_width, s.mb_height), (1920, 1082, 120, 68));
        assert_eq!(s.crop(), (0, 3));
        let sps = s.sps();
        assert_eq!(&sps[..8], &[0, 0, 0, 1, 0x67, 66, 0xe0, 42]);
    }
}
