#version 450
// RGB -> NV12 (BT.709, limited range), one invocation per 4x2 pixel block.
//
// Compiled to SPIR-V by naga in build.rs (no 8-bit storage, no includes): the source frame is read as 32-bit
// words and unpacked by hand; each invocation writes whole u32 words it alone owns: one word of Y in each of
// its two rows (4 luma samples) and one word of UV (2 Cb/Cr pairs). The NV12 layout is exactly the one of
// `Nv12Frame`: both planes `dst_stride` bytes per row (a multiple of 64), the UV plane at byte `uv_offset`,
// the visible size padded to even by repeating the last column/row; bytes right of the padded width get the
// black of `Nv12Frame::new` (Y 16, UV 128). Colour math mirrors src/convert/reference.rs.

layout(local_size_x = 16, local_size_y = 4, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer Src {
    uint words[];
} src;

layout(std430, set = 0, binding = 1) buffer Dst {
    uint words[];
} dst;

layout(push_constant) uniform Params {
    uint width;       // visible width in pixels
    uint height;      // visible height in pixels
    uint src_stride;  // bytes between source rows
    uint src_offset;  // byte offset of the first source row (in memory order)
    uint bpp;         // bytes per source pixel (2, 3, 4)
    uint kind;        // 0: 8-bit channels, 1: 10-bit channels, 2: 565
    uint shifts;      // red | green << 8 | blue << 16: bit position of each channel in the pixel word
    uint y_invert;    // 1: row 0 in memory is the bottom of the picture
    uint dst_stride;  // bytes between NV12 rows (both planes)
    uint uv_offset;   // byte offset of the UV plane
    uint block_x0;    // first 4x2 block of this dispatch (in blocks)
    uint block_y0;
    uint block_w;     // blocks in this dispatch
    uint block_h;
    uint src_words;   // 32-bit words in the source buffer
} pc;

// Little-endian 32 bits starting at any byte offset (the buffer is padded so the word after is readable).
uint load32(uint off) {
    uint i = off >> 2u;
    uint sh = (off & 3u) * 8u;
    uint w0 = src.words[i];
    if (sh == 0u) {
        return w0;
    }
    // The word after may lie past the end of a tight buffer (2- and 3-byte pixels at the very end): its bytes
    // are never used then, so read 0 instead of going out of bounds.
    uint w1 = 0u;
    if (i + 1u < pc.src_words) {
        w1 = src.words[i + 1u];
    }
    return (w0 >> sh) | (w1 << (32u - sh));
}

// 8-bit R, G, B of the pixel at picture position (x, y), both already clamped to the visible frame.
vec3 pixel(uint x, uint y) {
    uint row = y;
    if (pc.y_invert != 0u) {
        row = pc.height - 1u - y;
    }
    uint w = load32(pc.src_offset + row * pc.src_stride + x * pc.bpp);
    uint rs = pc.shifts & 255u;
    uint gs = (pc.shifts >> 8u) & 255u;
    uint bs = (pc.shifts >> 16u) & 255u;
    uint r;
    uint g;
    uint b;
    if (pc.kind == 0u) {
        r = (w >> rs) & 255u;
        g = (w >> gs) & 255u;
        b = (w >> bs) & 255u;
    } else if (pc.kind == 1u) {
        r = (((w >> rs) & 1023u) * 255u + 511u) / 1023u;
        g = (((w >> gs) & 1023u) * 255u + 511u) / 1023u;
        b = (((w >> bs) & 1023u) * 255u + 511u) / 1023u;
    } else {
        r = (((w >> rs) & 31u) * 255u + 15u) / 31u;
        g = (((w >> gs) & 63u) * 255u + 31u) / 63u;
        b = (((w >> bs) & 31u) * 255u + 15u) / 31u;
    }
    return vec3(float(r), float(g), float(b));
}

const float KR = 0.2126;
const float KB = 0.0722;
const float KG = 0.7152;

uint round_u8(float v) {
    return uint(clamp(floor(v + 0.5), 0.0, 255.0));
}

float luma(vec3 rgb) {
    return (KR * rgb.x + KG * rgb.y + KB * rgb.z) / 255.0;
}

uint y_of(vec3 rgb) {
    return round_u8(16.0 + 219.0 * luma(rgb));
}

// Cb | Cr << 8 of a 2x2 block's summed R, G, B.
uint cbcr_of(vec3 sum) {
    vec3 avg = sum * 0.25;
    float y = luma(avg);
    uint cb = round_u8(128.0 + 224.0 * (avg.z / 255.0 - y) / (2.0 * (1.0 - KB)));
    uint cr = round_u8(128.0 + 224.0 * (avg.x / 255.0 - y) / (2.0 * (1.0 - KR)));
    return cb | (cr << 8u);
}

void main() {
    uvec3 gid = gl_GlobalInvocationID;
    if (gid.x >= pc.block_w || gid.y >= pc.block_h) {
        return;
    }
    uint bx = pc.block_x0 + gid.x;
    uint by = pc.block_y0 + gid.y;
    uint pw = pc.width + (pc.width & 1u);
    uint x0 = bx * 4u;
    uint y0 = by * 2u;
    uint y1 = min(y0 + 1u, pc.height - 1u);
    uint ya = min(y0, pc.height - 1u);

    uint top = 0u;
    uint bottom = 0u;
    uint uv = 0u;
    for (uint i = 0u; i < 2u; i = i + 1u) {
        uint xa = x0 + 2u * i;
        uint shift = 16u * i;
        if (xa >= pw) {
            // Right of the padded width: the black of a fresh Nv12Frame.
            top = top | (0x1010u << shift);
            bottom = bottom | (0x1010u << shift);
            uv = uv | (0x8080u << shift);
        } else {
            uint xl = min(xa, pc.width - 1u);
            uint xr = min(xa + 1u, pc.width - 1u);
            vec3 p00 = pixel(xl, ya);
            vec3 p10 = pixel(xr, ya);
            vec3 p01 = pixel(xl, y1);
            vec3 p11 = pixel(xr, y1);
            top = top | ((y_of(p00) | (y_of(p10) << 8u)) << shift);
            bottom = bottom | ((y_of(p01) | (y_of(p11) << 8u)) << shift);
            uv = uv | (cbcr_of(p00 + p10 + p01 + p11) << shift);
        }
    }
    uint ys = pc.dst_stride >> 2u;
    uint col = bx;
    dst.words[y0 * ys + col] = top;
    dst.words[(y0 + 1u) * ys + col] = bottom;
    dst.words[(pc.uv_offset >> 2u) + by * ys + col] = uv;
}
