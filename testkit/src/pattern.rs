//! `wl-webrtc-test-pattern`: a small Wayland client that covers an output with known content, so captured
//! (and later streamed) pixels can be checked. A wlr-layer-shell overlay surface anchored to all edges, so
//! it covers exactly one output and follows its mode changes.
//!
//! Patterns: four quadrants (red, green / blue, yellow: colour order and orientation are both visible), and
//! the same with a white bar that moves on every frame callback, damaging only the bar.
//!
//! `input-log`: the quadrants on a surface with exclusive keyboard focus that prints every pointer and keyboard
//! event as one JSON object per line on stdout (surface-local coordinates = output logical coordinates, as the
//! surface covers the output; keys as evdev code, keysym and the text xkb makes of them), so tests can check
//! what remote control injected.

use smithay_client_toolkit::compositor::{CompositorHandler, CompositorState, FrameCallbackData};
use smithay_client_toolkit::output::{OutputHandler, OutputState};
use smithay_client_toolkit::registry::{ProvidesRegistryState, RegistryState};
use smithay_client_toolkit::seat::keyboard::{KeyEvent, KeyboardHandler, Keysym, Modifiers, RawModifiers};
use smithay_client_toolkit::seat::pointer::{PointerEvent, PointerEventKind, PointerHandler};
use smithay_client_toolkit::seat::{Capability, SeatHandler, SeatState};
use smithay_client_toolkit::shell::WaylandSurface;
use smithay_client_toolkit::shell::wlr_layer::{
    Anchor, KeyboardInteractivity, Layer, LayerShell, LayerShellHandler, LayerSurface, LayerSurfaceConfigure,
};
use smithay_client_toolkit::shm::{Shm, ShmHandler, slot::SlotPool};
use smithay_client_toolkit::{delegate_dispatch2, delegate_registry, registry_handlers};
use wayland_client::globals::registry_queue_init;
use wayland_client::protocol::{wl_keyboard, wl_output, wl_pointer, wl_seat, wl_shm, wl_surface};
use wayland_client::{Connection, QueueHandle};

use wl_webrtc::capture::wayland;
use wl_webrtc::frame::PixelFormat;

/// Test patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PatternKind {
    /// Four coloured quadrants (red, green / blue, yellow), painted once.
    Quadrants,
    /// The quadrants with a white bar that moves every frame (only the bar is damaged).
    MovingBar,
    /// Random 8×8 blocks, new every frame over the whole output: the worst case for the encoder (it needs
    /// all the bitrate it is given).
    Noise,
    /// The glass-to-glass clock: every frame carries the wall-clock time and a frame counter as a barcode
    /// across the top (see `barcode`), over content chosen by `complexity`.
    Clock,
    /// The quadrants on a surface that takes keyboard focus and prints every pointer and keyboard event it
    /// receives as one JSON object per line on stdout (for remote-control tests).
    InputLog,
}

impl PatternKind {
    /// The `--pattern` value that names this kind.
    pub fn arg(self) -> &'static str {
        match self {
            PatternKind::Quadrants => "quadrants",
            PatternKind::MovingBar => "moving-bar",
            PatternKind::Noise => "noise",
            PatternKind::Clock => "clock",
            PatternKind::InputLog => "input-log",
        }
    }
}

/// What the client paints, where, and how.
#[derive(Debug, Clone)]
pub struct PatternOptions {
    pub kind: PatternKind,
    /// Output name (first output when `None`).
    pub output: Option<String>,
    /// For [`PatternKind::Clock`]: what moves under the barcode. 0 = nothing (only the barcode strip
    /// changes), 1 = the moving bar, 2 = full-screen noise (the encoder's worst case).
    pub complexity: u8,
    /// For [`PatternKind::Clock`]: stamp every frame this much earlier than the wall clock, so a latency
    /// harness reading the barcodes must see exactly this much more (the harness checks itself with it).
    pub clock_lag: std::time::Duration,
}

/// Quadrant colours, top-left, top-right, bottom-left, bottom-right.
pub const QUADRANTS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]];
/// Colour of the moving bar.
pub const BAR: [u8; 3] = [255, 255, 255];
/// Width of the moving bar in pixels.
pub const BAR_WIDTH: u32 = 64;
/// Pixels the bar advances per frame.
pub const BAR_STEP: u32 = 16;

/// Expected colour at (x, y) of the quadrant pattern of a `width`×`height` output.
pub fn quadrant_colour(width: u32, height: u32, x: u32, y: u32) -> [u8; 3] {
    let right = usize::from(x >= width / 2);
    let bottom = usize::from(y >= height / 2);
    QUADRANTS[bottom * 2 + right]
}

/// Side of the blocks of the noise pattern.
const NOISE_BLOCK: usize = 8;

/// Random grey-and-colour 8×8 blocks, a different set every frame (xorshift seeded by the frame number).
fn paint_noise(canvas: &mut [u8], width: u32, height: u32, frame: u64) {
    let stride = width as usize * 4;
    let mut state = frame.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut row = vec![0u8; stride];
    for band in canvas.chunks_mut(stride * NOISE_BLOCK).take((height as usize).div_ceil(NOISE_BLOCK)) {
        for block in row.chunks_mut(4 * NOISE_BLOCK) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let [b, g, r, ..] = state.to_le_bytes();
            for px in block.chunks_exact_mut(4) {
                px.copy_from_slice(&[b, g, r, 0xff]);
            }
        }
        for line in band.chunks_exact_mut(stride) {
            line.copy_from_slice(&row);
        }
    }
}

/// Paint the pattern into an XRGB8888 canvas; returns the bar's x range when there is one.
pub fn paint(canvas: &mut [u8], width: u32, height: u32, kind: PatternKind, frame: u64) -> Option<(u32, u32)> {
    let stride = width as usize * 4;
    if kind == PatternKind::Noise {
        paint_noise(canvas, width, height, frame);
        return None;
    }
    if kind == PatternKind::Clock {
        return paint(canvas, width, height, PatternKind::MovingBar, frame);
    }
    if kind == PatternKind::InputLog {
        return paint(canvas, width, height, PatternKind::Quadrants, frame);
    }
    let mut px = [[0u8; 4]; 4];
    for (i, c) in QUADRANTS.iter().enumerate() {
        PixelFormat::Xrgb8888.from_rgb8(*c, &mut px[i]);
    }
    let mut bar_px = [0u8; 4];
    PixelFormat::Xrgb8888.from_rgb8(BAR, &mut bar_px);
    let bar = match kind {
        PatternKind::Quadrants => None,
        PatternKind::MovingBar if width > BAR_WIDTH => {
            let x0 = ((frame * u64::from(BAR_STEP)) % u64::from(width - BAR_WIDTH)) as u32;
            Some((x0, x0 + BAR_WIDTH))
        }
        PatternKind::MovingBar | PatternKind::Noise | PatternKind::Clock | PatternKind::InputLog => None,
    };
    // Build the top and bottom rows once, then copy them: fast even in debug builds.
    let make_row = |half: usize| -> Vec<u8> {
        let mut row = Vec::with_capacity(stride);
        for x in 0..width {
            let on_bar = bar.is_some_and(|(a, b)| x >= a && x < b);
            row.extend_from_slice(if on_bar { &bar_px } else { &px[half * 2 + usize::from(x >= width / 2)] });
        }
        row
    };
    let (top, bottom) = (make_row(0), make_row(1));
    for (y, row) in canvas.chunks_exact_mut(stride).take(height as usize).enumerate() {
        row.copy_from_slice(if (y as u32) < height / 2 { &top } else { &bottom });
    }
    bar
}

struct App {
    registry: RegistryState,
    outputs: OutputState,
    compositor: CompositorState,
    shm: Shm,
    pool: Option<SlotPool>,
    layer: Option<LayerSurface>,
    kind: PatternKind,
    /// How much earlier than the wall clock the clock's barcodes are stamped.
    clock_lag: std::time::Duration,
    /// What `kind` paints under the clock's barcode.
    background: PatternKind,
    size: (u32, u32),
    frame: u64,
    last_bar: Option<(u32, u32)>,
    closed: bool,
    error: Option<String>,
    seat: SeatState,
    /// `input-log`: the devices whose events are printed.
    keyboard: Option<wl_keyboard::WlKeyboard>,
    pointer: Option<wl_pointer::WlPointer>,
}

/// Whether a pattern is painted once (no frame callbacks): the static ones.
fn is_static(kind: PatternKind) -> bool {
    matches!(kind, PatternKind::Quadrants | PatternKind::InputLog)
}

/// Print one input-log line (stdout is line-buffered: each line is out at once).
fn log_event(v: serde_json::Value) {
    println!("{v}");
}

/// Run the test-pattern client on `opts.output` until the compositor closes it or `stop`
/// is set (SIGINT/SIGTERM: the flag is checked at least every 100 ms, so a killed client exits promptly).
pub fn run(
    socket: &std::path::Path,
    opts: &PatternOptions,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    let (kind, complexity, output) = (opts.kind, opts.complexity, opts.output.as_deref());
    let conn = wayland::connect(socket)?;
    let (globals, mut queue) = registry_queue_init::<App>(&conn)?;
    let qh = queue.handle();
    let layer_shell = LayerShell::bind(&globals, &qh)
        .map_err(|e| anyhow::anyhow!("the compositor has no wlr-layer-shell (needed by test-pattern): {e}"))?;
    let mut app = App {
        registry: RegistryState::new(&globals),
        outputs: OutputState::new(&globals, &qh),
        compositor: CompositorState::bind(&globals, &qh)?,
        shm: Shm::bind(&globals, &qh)?,
        pool: None,
        layer: None,
        kind,
        clock_lag: opts.clock_lag,
        background: match (kind, complexity) {
            (PatternKind::Clock, 0) => PatternKind::Quadrants,
            (PatternKind::Clock, 1) => PatternKind::MovingBar,
            (PatternKind::Clock, _) => PatternKind::Noise,
            (k, _) => k,
        },
        size: (0, 0),
        frame: 0,
        last_bar: None,
        closed: false,
        error: None,
        seat: SeatState::new(&globals, &qh),
        keyboard: None,
        pointer: None,
    };
    queue.roundtrip(&mut app)?;
    queue.roundtrip(&mut app)?;
    let named: Vec<(wl_output::WlOutput, String)> = app
        .outputs
        .outputs()
        .filter_map(|o| {
            let name = app.outputs.info(&o)?.name?;
            Some((o, name))
        })
        .collect();
    let names: Vec<String> = named.iter().map(|(_, n)| n.clone()).collect();
    let (target, name) = match output {
        None => named.into_iter().next().ok_or(wl_webrtc::capture::CaptureError::NoOutputs)?,
        Some(want) => named.into_iter().find(|(_, n)| n == want).ok_or_else(|| {
            wl_webrtc::capture::CaptureError::UnknownOutput { name: want.to_owned(), available: names }
        })?,
    };
    let surface = app.compositor.create_surface(&qh);
    let layer =
        layer_shell.create_layer_surface(&qh, surface, Layer::Overlay, Some("wl-webrtc-test-pattern"), Some(&target));
    layer.set_anchor(Anchor::TOP | Anchor::BOTTOM | Anchor::LEFT | Anchor::RIGHT);
    layer.set_exclusive_zone(-1);
    layer.set_keyboard_interactivity(if kind == PatternKind::InputLog {
        KeyboardInteractivity::Exclusive
    } else {
        KeyboardInteractivity::None
    });
    layer.set_size(0, 0);
    layer.commit();
    app.layer = Some(layer);
    tracing::info!(output = %name, ?kind, "test pattern running");
    while !app.closed && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        dispatch_for(&mut queue, &mut app, std::time::Duration::from_millis(100))?;
        if let Some(e) = app.error.take() {
            anyhow::bail!(e);
        }
    }
    Ok(())
}

/// Dispatch what the compositor sent, waiting at most `timeout` for it.
fn dispatch_for(
    queue: &mut wayland_client::EventQueue<App>,
    app: &mut App,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    queue.flush()?;
    if let Some(guard) = queue.prepare_read() {
        wayland::read_events_within(guard, timeout)?;
    }
    queue.dispatch_pending(app)?;
    Ok(())
}

/// Damage the barcode strip (the rest of the clock frame is damaged by its background).
fn surface_damage_strip(layer: Option<&LayerSurface>, width: u32, strip: u32) {
    if let Some(layer) = layer {
        layer.wl_surface().damage_buffer(0, 0, width as i32, strip as i32);
    }
}

impl App {
    fn draw(&mut self, qh: &QueueHandle<Self>) {
        let (w, h) = self.size;
        if w == 0 || h == 0 {
            return;
        }
        let stride = w as i32 * 4;
        let pool = match &mut self.pool {
            Some(p) => p,
            None => match SlotPool::new((w * h * 4) as usize, &self.shm) {
                Ok(p) => self.pool.insert(p),
                Err(e) => {
                    self.error = Some(format!("cannot create shm pool: {e}"));
                    return;
                }
            },
        };
        let (buffer, canvas) = match pool.create_buffer(w as i32, h as i32, stride, wl_shm::Format::Xrgb8888) {
            Ok(b) => b,
            Err(e) => {
                self.error = Some(format!("cannot create buffer: {e}"));
                return;
            }
        };
        // The clock is read as late as possible: right before the buffer is committed.
        let bar = paint(canvas, w, h, self.background, self.frame);
        if self.kind == PatternKind::Clock {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let now = now.saturating_sub(self.clock_lag);
            let strip =
                crate::barcode::paint(canvas, w, h, crate::barcode::Stamp::at(now.as_micros() as u64, self.frame));
            surface_damage_strip(self.layer.as_ref(), w, strip);
        }
        let Some(layer) = &self.layer else { return };
        let surface = layer.wl_surface();
        match (self.frame, bar, self.last_bar) {
            (1.., None, _) if self.kind == PatternKind::Clock && self.background == PatternKind::Quadrants => {}
            (0, ..) | (_, None, _) | (_, _, None) => surface.damage_buffer(0, 0, w as i32, h as i32),
            (_, Some((a, b)), Some((c, d))) => {
                surface.damage_buffer(a as i32, 0, (b - a) as i32, h as i32);
                surface.damage_buffer(c as i32, 0, (d - c) as i32, h as i32);
            }
        }
        self.last_bar = bar;
        if !is_static(self.kind) {
            surface.frame(qh, FrameCallbackData(surface.clone()));
        }
        if let Err(e) = buffer.attach_to(surface) {
            self.error = Some(format!("cannot attach buffer: {e}"));
            return;
        }
        surface.commit();
        self.frame += 1;
    }
}

impl CompositorHandler for App {
    fn scale_factor_changed(&mut self, _: &Connection, _: &QueueHandle<Self>, _: &wl_surface::WlSurface, _: i32) {}
    fn transform_changed(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: wl_output::Transform,
    ) {
    }
    fn frame(&mut self, _: &Connection, qh: &QueueHandle<Self>, _: &wl_surface::WlSurface, _: u32) {
        self.draw(qh);
    }
    fn surface_enter(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: &wl_output::WlOutput,
    ) {
    }
    fn surface_leave(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_surface::WlSurface,
        _: &wl_output::WlOutput,
    ) {
    }
}

impl LayerShellHandler for App {
    fn closed(&mut self, _: &Connection, _: &QueueHandle<Self>, _: &LayerSurface) {
        self.closed = true;
    }

    fn configure(
        &mut self,
        _: &Connection,
        qh: &QueueHandle<Self>,
        _: &LayerSurface,
        cfg: LayerSurfaceConfigure,
        _: u32,
    ) {
        if cfg.new_size != self.size {
            self.size = cfg.new_size;
            self.last_bar = None;
            println!("configured {}x{}", cfg.new_size.0, cfg.new_size.1);
            self.draw(qh);
        } else if is_static(self.kind) {
            self.draw(qh);
        }
    }
}

impl OutputHandler for App {
    fn output_state(&mut self) -> &mut OutputState {
        &mut self.outputs
    }
    fn new_output(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}
    fn update_output(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}
    fn output_destroyed(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_output::WlOutput) {}
}

impl ShmHandler for App {
    fn shm_state(&mut self) -> &mut Shm {
        &mut self.shm
    }
}

impl SeatHandler for App {
    fn seat_state(&mut self) -> &mut SeatState {
        &mut self.seat
    }
    fn new_seat(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_seat::WlSeat) {}
    fn new_capability(&mut self, _: &Connection, qh: &QueueHandle<Self>, seat: wl_seat::WlSeat, cap: Capability) {
        if self.kind != PatternKind::InputLog {
            return;
        }
        if cap == Capability::Keyboard && self.keyboard.is_none() {
            match self.seat.get_keyboard(qh, &seat, None) {
                Ok(k) => self.keyboard = Some(k),
                Err(e) => self.error = Some(format!("cannot get the keyboard: {e}")),
            }
        }
        if cap == Capability::Pointer && self.pointer.is_none() {
            match self.seat.get_pointer(qh, &seat) {
                Ok(p) => self.pointer = Some(p),
                Err(e) => self.error = Some(format!("cannot get the pointer: {e}")),
            }
        }
    }
    fn remove_capability(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_seat::WlSeat, cap: Capability) {
        if cap == Capability::Keyboard {
            self.keyboard = None;
        }
        if cap == Capability::Pointer {
            self.pointer = None;
        }
    }
    fn remove_seat(&mut self, _: &Connection, _: &QueueHandle<Self>, _: wl_seat::WlSeat) {}
}

fn key_json(kind: &str, e: &KeyEvent) -> serde_json::Value {
    serde_json::json!({
        "ev": "key",
        "down": kind == "press",
        "code": e.raw_code,
        "keysym": e.keysym.raw(),
        "name": e.keysym.name(),
        "utf8": e.utf8,
    })
}

impl KeyboardHandler for App {
    fn enter(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: &wl_surface::WlSurface,
        _: u32,
        raw: &[u32],
        _: &[Keysym],
    ) {
        log_event(serde_json::json!({ "ev": "keyboard_enter", "held": raw }));
    }
    fn leave(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: &wl_surface::WlSurface,
        _: u32,
    ) {
        log_event(serde_json::json!({ "ev": "keyboard_leave" }));
    }
    fn press_key(&mut self, _: &Connection, _: &QueueHandle<Self>, _: &wl_keyboard::WlKeyboard, _: u32, e: KeyEvent) {
        log_event(key_json("press", &e));
    }
    fn repeat_key(&mut self, _: &Connection, _: &QueueHandle<Self>, _: &wl_keyboard::WlKeyboard, _: u32, _: KeyEvent) {}
    fn release_key(&mut self, _: &Connection, _: &QueueHandle<Self>, _: &wl_keyboard::WlKeyboard, _: u32, e: KeyEvent) {
        log_event(key_json("release", &e));
    }
    fn update_modifiers(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_keyboard::WlKeyboard,
        _: u32,
        m: Modifiers,
        _: RawModifiers,
        _: u32,
    ) {
        log_event(serde_json::json!({
            "ev": "modifiers", "shift": m.shift, "ctrl": m.ctrl, "alt": m.alt, "logo": m.logo, "caps": m.caps_lock,
        }));
    }
}

impl PointerHandler for App {
    fn pointer_frame(
        &mut self,
        _: &Connection,
        _: &QueueHandle<Self>,
        _: &wl_pointer::WlPointer,
        events: &[PointerEvent],
    ) {
        for e in events {
            let (x, y) = e.position;
            let v = match &e.kind {
                PointerEventKind::Enter { .. } => serde_json::json!({ "ev": "enter", "x": x, "y": y }),
                PointerEventKind::Leave { .. } => serde_json::json!({ "ev": "leave" }),
                PointerEventKind::Motion { .. } => serde_json::json!({ "ev": "motion", "x": x, "y": y }),
                PointerEventKind::Press { button, .. } | PointerEventKind::Release { button, .. } => {
                    let down = matches!(e.kind, PointerEventKind::Press { .. });
                    serde_json::json!({ "ev": "button", "button": button, "down": down, "x": x, "y": y })
                }
                PointerEventKind::Axis { horizontal, vertical, source, .. } => serde_json::json!({
                    "ev": "axis",
                    "v": vertical.absolute, "h": horizontal.absolute,
                    "v_discrete": vertical.discrete, "h_discrete": horizontal.discrete,
                    "source": source.map(|s| format!("{s:?}")),
                }),
            };
            log_event(v);
        }
    }
}

impl ProvidesRegistryState for App {
    fn registry(&mut self) -> &mut RegistryState {
        &mut self.registry
    }
    registry_handlers![OutputState, SeatState];
}

delegate_dispatch2!(App);
delegate_registry!(App);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadrants_paint_where_expected() {
        let (w, h) = (8u32, 6u32);
        let mut canvas = vec![0u8; (w * h * 4) as usize];
        paint(&mut canvas, w, h, PatternKind::Quadrants, 0);
        for (x, y) in [(0, 0), (7, 0), (0, 5), (7, 5), (3, 2), (4, 3)] {
            let off = ((y * w + x) * 4) as usize;
            assert_eq!(PixelFormat::Xrgb8888.to_rgb8(&canvas[off..off + 4]), quadrant_colour(w, h, x, y), "({x},{y})");
        }
    }

    #[test]
    fn noise_changes_every_frame_and_fills_odd_sizes() {
        let (w, h) = (37, 21);
        let mut a = vec![0u8; w * h * 4];
        let mut b = vec![0u8; w * h * 4];
        assert_eq!(paint(&mut a, w as u32, h as u32, PatternKind::Noise, 1), None);
        paint(&mut b, w as u32, h as u32, PatternKind::Noise, 2);
        assert_ne!(a, b);
        assert!(a.chunks_exact(4).all(|p| p[3] == 0xff), "every pixel painted");
        // Blocks: pixels inside one 8×8 block are equal, neighbouring blocks (almost always) differ.
        assert_eq!(a[0..4], a[7 * 4..8 * 4]);
        assert_eq!(a[0..4], a[7 * w * 4..7 * w * 4 + 4]);
        assert_ne!(a[0..4], a[8 * 4..9 * 4]);
    }

    #[test]
    fn bar_moves_each_frame() {
        let (w, h) = (256u32, 4u32);
        let mut canvas = vec![0u8; (w * h * 4) as usize];
        let a = paint(&mut canvas, w, h, PatternKind::MovingBar, 0).expect("bar");
        let b = paint(&mut canvas, w, h, PatternKind::MovingBar, 1).expect("bar");
        assert_eq!(b.0, a.0 + BAR_STEP);
        let off = (b.0 * 4) as usize;
        assert_eq!(PixelFormat::Xrgb8888.to_rgb8(&canvas[off..off + 4]), BAR);
    }
}
