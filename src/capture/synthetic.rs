//! A capture source without a compositor: a synthetic desktop (`synthetic::synthetic_desktop`) that is either
//! static or moves every frame, on the caller's clock. It answers a request the way a compositor does: with a
//! frame only when something changed since the last one (the first frame always), damage and timestamps
//! included. The pipeline is tested with it on simulated time.

use std::time::Instant;

use crate::frame::{Damage, FrameInfo, FrameLayout, PixelFormat};
use crate::synthetic::synthetic_desktop;

/// Whether the synthetic desktop changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    /// Nothing moves: one frame, then none.
    Static,
    /// A box moves every frame.
    Moving,
}

/// See the module docs.
#[derive(Debug)]
pub struct SyntheticSource {
    layout: FrameLayout,
    motion: Motion,
    pixels: Vec<u8>,
    /// The animation time of the picture in `pixels` (`None` before the first frame).
    drawn: Option<u32>,
    t: u32,
    seq: u64,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32, motion: Motion) -> SyntheticSource {
        let layout = FrameLayout { width, height, stride: width * 4, format: PixelFormat::Xrgb8888 };
        SyntheticSource { layout, motion, pixels: Vec::new(), drawn: None, t: 0, seq: 0 }
    }

    pub fn set_motion(&mut self, motion: Motion) {
        self.motion = motion;
    }

    /// A frame requested at `requested_at` and ready at `now`, or `None` when nothing changed since the last
    /// frame (a compositor would not answer yet).
    pub fn capture(&mut self, requested_at: Instant, now: Instant) -> Option<FrameInfo> {
        if self.motion == Motion::Moving && self.drawn.is_some() {
            self.t += 1;
        }
        if self.drawn == Some(self.t) {
            return None;
        }
        self.pixels = synthetic_desktop(self.layout.width, self.layout.height, self.t);
        self.drawn = Some(self.t);
        let info = FrameInfo {
            layout: self.layout,
            y_invert: false,
            damage: Damage::Full,
            requested_at,
            ready_at: now,
            presented: None,
            age: None,
            seq: self.seq,
        };
        self.seq += 1;
        Some(info)
    }

    /// The pixels of the last frame (XRGB8888, rows `layout().stride` bytes apart).
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    /// Frames delivered so far.
    pub fn frames(&self) -> u64 {
        self.seq
    }
}
