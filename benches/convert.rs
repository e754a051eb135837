//! RGB → NV12 conversion speed: full 1080p and 2160p frames for the common capture formats, plus a 1080p
//! XRGB8888 frame with 5 % damage, and the capture → media handoff of a picture (`handoff`: the NV12 copy it
//! used to make, against moving the pooled picture). Run with `cargo bench --bench convert`.
//!
//! When a Vulkan device exists (software ones included), the `convert_vulkan` group times the Vulkan converter
//! end to end (upload + dispatch + readback) on the same frames; `wl-webrtc bench convert` splits it by stage.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use wl_webrtc::convert::Converter;
use wl_webrtc::convert::vulkan::{DevicePreference, VulkanConverter};
use wl_webrtc::frame::{Damage, FrameLayout, Nv12Frame, PixelFormat, Rect};

/// A deterministic, busy test picture (gradients plus noise) in `format`.
fn source(format: PixelFormat, width: u32, height: u32) -> (Vec<u8>, FrameLayout) {
    let bpp = format.bytes_per_pixel();
    let stride = width as usize * bpp;
    let mut data = vec![0u8; stride * height as usize];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for y in 0..height as usize {
        for x in 0..width as usize {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = (seed >> 59) as u8;
            let rgb =
                [(x * 255 / width as usize) as u8 ^ noise, (y * 255 / height as usize) as u8, noise.wrapping_mul(8)];
            format.from_rgb8(rgb, &mut data[y * stride + x * bpp..]);
        }
    }
    (data, FrameLayout { width, height, stride: stride as u32, format })
}

fn full_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("convert_full");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (w, h) in [(1920, 1080), (3840, 2160)] {
        // 2160p XR30 takes >10 ms a frame on a small machine: fewer samples keep the whole run near a minute.
        group.sample_size(if h > 1080 { 10 } else { 20 });
        for format in [
            PixelFormat::Xrgb8888,
            PixelFormat::Xbgr8888,
            PixelFormat::Argb8888,
            PixelFormat::Abgr8888,
            PixelFormat::Xrgb2101010,
        ] {
            let (data, layout) = source(format, w, h);
            let mut conv = Converter::cpu();
            let mut out = Nv12Frame::new(w, h);
            group.bench_with_input(BenchmarkId::new(format.to_string(), format!("{w}x{h}")), &data, |b, data| {
                b.iter(|| {
                    conv.convert(black_box(data), &layout, false, &Damage::Full, &mut out).expect("convert");
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

fn damaged_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("convert_damage");
    group.sample_size(50).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let (w, h) = (1920, 1080);
    let (data, layout) = source(PixelFormat::Xrgb8888, w, h);
    // A text area, a toolbar and a cursor: 80000 + 20000 + 4096 px ≈ 5 % of the frame.
    let damage =
        Damage::Rects(vec![Rect::new(301, 417, 800, 100), Rect::new(0, 1040, 500, 40), Rect::new(1501, 99, 64, 64)]);
    let fraction = damage.fraction(w, h);
    let mut conv = Converter::cpu();
    let mut out = Nv12Frame::new(w, h);
    conv.convert(&data, &layout, false, &Damage::Full, &mut out).expect("convert");
    group.bench_function(BenchmarkId::new("XR24", format!("{w}x{h}_{:.1}pct", fraction * 100.0)), |b| {
        b.iter(|| {
            conv.convert(black_box(&data), &layout, false, &damage, &mut out).expect("convert");
            black_box(&out);
        })
    });
    group.finish();
}

fn vulkan(c: &mut Criterion) {
    let mut conv = match VulkanConverter::new(DevicePreference::Any) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("convert_vulkan: skipped, no Vulkan device: {e}");
            return;
        }
    };
    let software = !conv.device().is_hardware_gpu();
    let mut group = c.benchmark_group("convert_vulkan");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (w, h) in [(1920, 1080), (3840, 2160)] {
        let (data, layout) = source(PixelFormat::Xrgb8888, w, h);
        let mut out = Nv12Frame::new(w, h);
        let id = format!("{w}x{h}{}", if software { "_software" } else { "" });
        group.bench_with_input(BenchmarkId::new("XR24", &id), &data, |b, data| {
            b.iter(|| {
                conv.convert(black_box(data), &layout, false, &Damage::Full, &mut out).expect("convert");
                black_box(&out);
            })
        });
        let damage = Damage::Rects(vec![
            Rect::new(301, 417, 800, 100),
            Rect::new(0, 1040, 500, 40),
            Rect::new(1501, 99, 64, 64),
        ]);
        group.bench_with_input(BenchmarkId::new("XR24_damage", &id), &data, |b, data| {
            b.iter(|| {
                conv.convert(black_box(data), &layout, false, &damage, &mut out).expect("convert");
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// The capture → media handoff of one converted picture. `copy` is what `PictureSlot::offer` did per frame
/// until pictures circulated (a full NV12 copy); `move` is what it does now (the pooled picture itself).
fn handoff(c: &mut Criterion) {
    use wl_webrtc::media::{Picture, PictureSlot};
    let mut group = c.benchmark_group("handoff");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for (w, h) in [(1920, 1080), (3840, 2160)] {
        let mut src = Nv12Frame::new(w, h);
        src.y.fill(90);
        let mut dst = Nv12Frame::new(w, h);
        group.bench_function(BenchmarkId::new("copy", format!("{w}x{h}")), |b| {
            b.iter(|| dst.copy_from(black_box(&src)));
        });
        let slot = PictureSlot::default();
        let mut pic = Picture::empty();
        pic.nv12 = src.clone();
        slot.recycle(pic);
        group.bench_function(BenchmarkId::new("move", format!("{w}x{h}")), |b| {
            b.iter(|| {
                let pic = slot.spare();
                slot.offer(black_box(pic));
                if let Some(p) = slot.take(Duration::ZERO) {
                    slot.recycle(p);
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, full_frames, damaged_frame, vulkan, handoff);
criterion_main!(benches);
