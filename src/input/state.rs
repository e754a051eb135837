//! Sans-IO core of the injector: validated [`InputEvent`]s of any number of viewers in, virtual-device
//! [`Action`]s out. Owns the held keys and buttons per viewer (a key two viewers hold goes up only when both
//! let go; a viewer that leaves releases what it held) and the mapping of normalized pointer positions to the
//! coordinates `zwlr_virtual_pointer_v1.motion_absolute` wants. No Wayland, no clock: tested as is.

use std::collections::{BTreeMap, BTreeSet};

use super::{InputEvent, WheelMode};

/// Scroll distance of one wheel line, in the pointer's coordinate space (what libinput reports per
/// wheel click).
pub(crate) const LINE_SCROLL: f64 = 15.0;

/// A rectangle of the compositor's logical coordinate space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
}

/// Where absolute pointer coordinates land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerSpace {
    /// The virtual pointer was created for the streamed output (`create_virtual_pointer_with_output`):
    /// coordinates are relative to that output, extent = its logical size.
    Output { width: u32, height: u32 },
    /// The pointer spans the whole layout (manager version 1): the streamed output's place in it.
    Layout { output: Area, layout: Area },
}

/// A scroll axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Vertical,
    Horizontal,
}

/// What to do on the virtual devices.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `motion_absolute(time, x, y, x_extent, y_extent)` + `frame`.
    Motion { x: u32, y: u32, x_extent: u32, y_extent: u32 },
    /// `button(time, code, pressed)` + `frame`.
    Button { code: u32, down: bool },
    /// Scroll on one axis: `axis_source` + `axis_discrete` (wheel clicks) or `axis` (smooth) + `frame`.
    Axis { axis: Axis, value: f64, discrete: Option<i32> },
    /// `key(time, code, pressed)`, then `modifiers` if they changed.
    Key { code: u32, down: bool },
    /// Type this text with the keymap (the injector expands it into keys).
    Text(String),
}

/// Held keys and buttons of every viewer.
#[derive(Debug, Default)]
pub struct InputState {
    keys: BTreeMap<u32, BTreeSet<u64>>,
    buttons: BTreeMap<u32, BTreeSet<u64>>,
}

/// Press or release `code` for `viewer` in `held`; `Some(down)` when the device must change.
fn press(held: &mut BTreeMap<u32, BTreeSet<u64>>, code: u32, viewer: u64, down: bool) -> Option<bool> {
    if down {
        let holders = held.entry(code).or_default();
        let first = holders.is_empty();
        holders.insert(viewer);
        first.then_some(true)
    } else {
        let holders = held.get_mut(&code)?;
        if !holders.remove(&viewer) {
            return None; // not held by this viewer: a stray release changes nothing
        }
        if holders.is_empty() {
            held.remove(&code);
            return Some(false);
        }
        None
    }
}

/// Release everything `viewer` holds in `held`; the codes that must go up.
fn release_all(held: &mut BTreeMap<u32, BTreeSet<u64>>, viewer: u64) -> Vec<u32> {
    let mut up = Vec::new();
    held.retain(|&code, holders| {
        if holders.remove(&viewer) && holders.is_empty() {
            up.push(code);
            return false;
        }
        true
    });
    up
}

/// Normalized 0..=1 → a pixel of `extent` (the last pixel for 1.0).
fn scale(v: f64, extent: u32) -> u32 {
    let px = (v.clamp(0.0, 1.0) * f64::from(extent)).floor();
    (px as u32).min(extent.saturating_sub(1))
}

/// Map a normalized position over the streamed picture to `motion_absolute` arguments.
pub(crate) fn map_pointer(x: f64, y: f64, space: PointerSpace) -> Action {
    match space {
        PointerSpace::Output { width, height } => {
            Action::Motion { x: scale(x, width), y: scale(y, height), x_extent: width.max(1), y_extent: height.max(1) }
        }
        PointerSpace::Layout { output, layout } => {
            let ox = u32::try_from(output.x - layout.x).unwrap_or(0);
            let oy = u32::try_from(output.y - layout.y).unwrap_or(0);
            Action::Motion {
                x: ox + scale(x, output.width),
                y: oy + scale(y, output.height),
                x_extent: layout.width.max(1),
                y_extent: layout.height.max(1),
            }
        }
    }
}

/// The bounding box of some areas (the whole layout).
pub fn bounding_box(areas: impl IntoIterator<Item = Area>) -> Option<Area> {
    let mut it = areas.into_iter();
    let first = it.next()?;
    let (mut x0, mut y0) = (first.x, first.y);
    let (mut x1, mut y1) = (first.x + first.width as i32, first.y + first.height as i32);
    for a in it {
        x0 = x0.min(a.x);
        y0 = y0.min(a.y);
        x1 = x1.max(a.x + a.width as i32);
        y1 = y1.max(a.y + a.height as i32);
    }
    Some(Area { x: x0, y: y0, width: (x1 - x0) as u32, height: (y1 - y0) as u32 })
}

fn scroll(axis: Axis, delta: f64, mode: WheelMode) -> Option<Action> {
    if delta == 0.0 {
        return None;
    }
    Some(match mode {
        WheelMode::Pixel => Action::Axis { axis, value: delta, discrete: None },
        WheelMode::Line => {
            let clicks = delta.round() as i32;
            let clicks = if clicks == 0 { delta.signum() as i32 } else { clicks };
            Action::Axis { axis, value: delta * LINE_SCROLL, discrete: Some(clicks) }
        }
    })
}

impl InputState {
    /// What `viewer`'s event does to the devices (`space`: where the pointer's coordinates land now).
    pub fn handle(&mut self, viewer: u64, event: InputEvent, space: PointerSpace) -> Vec<Action> {
        match event {
            InputEvent::Move { x, y } => vec![map_pointer(x, y, space)],
            InputEvent::Button { button, down } => press(&mut self.buttons, button, viewer, down)
                .map(|down| Action::Button { code: button, down })
                .into_iter()
                .collect(),
            InputEvent::Wheel { dx, dy, mode } => {
                [scroll(Axis::Vertical, dy, mode), scroll(Axis::Horizontal, dx, mode)].into_iter().flatten().collect()
            }
            InputEvent::Key { key, down } => press(&mut self.keys, key, viewer, down)
                .map(|down| Action::Key { code: key, down })
                .into_iter()
                .collect(),
            InputEvent::Text(s) => vec![Action::Text(s)],
            // The clipboard thread's, and the injector's keymap choice (handled before this).
            InputEvent::Clipboard(_) | InputEvent::Layout(_) => vec![],
        }
    }

    /// `viewer` is gone (disconnected, its channel closed): release every key and button only it held.
    pub fn viewer_gone(&mut self, viewer: u64) -> Vec<Action> {
        let keys = release_all(&mut self.keys, viewer).into_iter().map(|code| Action::Key { code, down: false });
        let buttons =
            release_all(&mut self.buttons, viewer).into_iter().map(|code| Action::Button { code, down: false });
        keys.chain(buttons).collect()
    }

    /// Release everything anyone holds (shutdown).
    pub fn release_everything(&mut self) -> Vec<Action> {
        let keys = std::mem::take(&mut self.keys).into_keys().map(|code| Action::Key { code, down: false });
        let buttons = std::mem::take(&mut self.buttons).into_keys().map(|code| Action::Button { code, down: false });
        keys.chain(buttons).collect()
    }

    /// Keys held by anyone.
    pub fn held_keys(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: PointerSpace = PointerSpace::Output { width: 800, height: 600 };

    #[test]
    fn pointer_maps_to_the_output_with_its_logical_extent() {
        assert_eq!(map_pointer(0.25, 0.25, OUT), Action::Motion { x: 200, y: 150, x_extent: 800, y_extent: 600 });
        assert_eq!(map_pointer(0.0, 0.0, OUT), Action::Motion { x: 0, y: 0, x_extent: 800, y_extent: 600 });
        // The far edge is the last pixel, not one past it.
        assert_eq!(map_pointer(1.0, 1.0, OUT), Action::Motion { x: 799, y: 599, x_extent: 800, y_extent: 600 });
        // A 1600x1200 mode at scale 2 is 800x600 logical: the same normalized point, the same logical pixel.
        assert_eq!(map_pointer(0.5, 0.5, OUT), Action::Motion { x: 400, y: 300, x_extent: 800, y_extent: 600 });
    }

    #[test]
    fn pointer_maps_into_the_layout_at_the_outputs_position() {
        let left = Area { x: 0, y: 0, width: 1920, height: 1080 };
        let right = Area { x: 1920, y: 200, width: 800, height: 600 };
        let layout = bounding_box([left, right]).expect("layout");
        assert_eq!(layout, Area { x: 0, y: 0, width: 2720, height: 1080 });
        let space = PointerSpace::Layout { output: right, layout };
        assert_eq!(map_pointer(0.5, 0.5, space), Action::Motion { x: 2320, y: 500, x_extent: 2720, y_extent: 1080 });
        // Negative positions: coordinates are relative to the layout's top-left.
        let a = Area { x: -800, y: 0, width: 800, height: 600 };
        let layout = bounding_box([a, left]).expect("layout");
        let space = PointerSpace::Layout { output: left, layout };
        assert_eq!(map_pointer(0.0, 0.0, space), Action::Motion { x: 800, y: 0, x_extent: 2720, y_extent: 1080 });
        assert_eq!(bounding_box([]), None);
    }

    #[test]
    fn keys_go_down_once_and_up_when_the_last_holder_lets_go() {
        let mut s = InputState::default();
        let key = |down| InputEvent::Key { key: 30, down };
        assert_eq!(s.handle(1, key(true), OUT), [Action::Key { code: 30, down: true }]);
        assert_eq!(s.handle(1, key(true), OUT), [], "repeat of a held key: no second press");
        assert_eq!(s.handle(2, key(true), OUT), [], "another viewer holds it too");
        assert_eq!(s.handle(1, key(false), OUT), [], "still held by viewer 2");
        assert_eq!(s.handle(3, key(false), OUT), [], "a stray release changes nothing");
        assert_eq!(s.handle(2, key(false), OUT), [Action::Key { code: 30, down: false }]);
        assert!(s.held_keys().is_empty());
    }

    #[test]
    fn a_viewer_that_leaves_releases_what_it_held() {
        let mut s = InputState::default();
        s.handle(1, InputEvent::Key { key: 42, down: true }, OUT);
        s.handle(1, InputEvent::Key { key: 30, down: true }, OUT);
        s.handle(1, InputEvent::Button { button: 0x110, down: true }, OUT);
        s.handle(2, InputEvent::Key { key: 30, down: true }, OUT);
        let released = s.viewer_gone(1);
        assert_eq!(released, [Action::Key { code: 42, down: false }, Action::Button { code: 0x110, down: false }]);
        assert_eq!(s.held_keys(), [30], "viewer 2 still holds KeyA");
        assert_eq!(s.viewer_gone(1), [], "nothing left");
        assert_eq!(s.release_everything(), [Action::Key { code: 30, down: false }]);
        assert!(s.held_keys().is_empty());
    }

    #[test]
    fn wheel_lines_are_clicks_and_pixels_are_smooth() {
        let mut s = InputState::default();
        let lines = s.handle(1, InputEvent::Wheel { dx: 0.0, dy: 2.0, mode: WheelMode::Line }, OUT);
        assert_eq!(lines, [Action::Axis { axis: Axis::Vertical, value: 30.0, discrete: Some(2) }]);
        let small = s.handle(1, InputEvent::Wheel { dx: -0.3, dy: 0.0, mode: WheelMode::Line }, OUT);
        assert_eq!(small, [Action::Axis { axis: Axis::Horizontal, value: -4.5, discrete: Some(-1) }]);
        let px = s.handle(1, InputEvent::Wheel { dx: 5.0, dy: -53.0, mode: WheelMode::Pixel }, OUT);
        assert_eq!(
            px,
            [
                Action::Axis { axis: Axis::Vertical, value: -53.0, discrete: None },
                Action::Axis { axis: Axis::Horizontal, value: 5.0, discrete: None }
            ]
        );
        assert_eq!(s.handle(1, InputEvent::Wheel { dx: 0.0, dy: 0.0, mode: WheelMode::Pixel }, OUT), []);
    }
}
