//! Build script: compiles the GLSL compute shaders in `shaders/` to SPIR-V with naga (pure Rust, so no system
//! shader compiler is needed). The SPIR-V lands in `$OUT_DIR` and is embedded with `include_bytes!`.

use std::path::PathBuf;

const SHADERS: &[&str] = &["rgb_to_nv12"];

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in SHADERS {
        let path = format!("shaders/{name}.comp");
        println!("cargo:rerun-if-changed={path}");
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let words = compile(&path, &source);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let target = out_dir.join(format!("{name}.spv"));
        std::fs::write(&target, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", target.display()));
    }
}

/// GLSL compute shader → validated module → SPIR-V 1.0 words. Any error fails the build with naga's message.
fn compile(path: &str, source: &str) -> Vec<u32> {
    let options = naga::front::glsl::Options::from(naga::ShaderStage::Compute);
    let module = naga::front::glsl::Frontend::default()
        .parse(&options, source)
        .unwrap_or_else(|e| panic!("{path}: GLSL errors:\n{}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{path}: validation failed:\n{}\n{e:?}", e.emit_to_string(source)));
    let spv_options = naga::back::spv::Options {
        // Release shaders: no debug names; integer division by constants only, no zero-divisor wrappers.
        flags: naga::back::spv::WriterFlags::empty(),
        emit_int_div_checks: false,
        ..Default::default()
    };
    let pipeline =
        naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "main".to_owned() };
    naga::back::spv::write_vec(&module, &info, &spv_options, Some(&pipeline))
        .unwrap_or_else(|e| panic!("{path}: SPIR-V generation failed: {e}"))
}
