/*
 * A fake VA-API driver for wl-webrtc's tests (issue 18): a shared object that real libva 2.17 loads through
 * LIBVA_DRIVERS_PATH + LIBVA_DRIVER_NAME=wlfake, speaking the real driver interface (va_backend.h). No machine
 * here has a VA driver or a render node; this is the bottom of the stack only, everything above it (libva,
 * cros-libva, wl-webrtc) is real.
 *
 * It answers the capability queries (H.264 Constrained Baseline/Main/High with an EncSlice entrypoint, YUV 4:2:0,
 * CBR/CQP, no packed headers, the NV12 image format), keeps surfaces (NV12 in memory), images (vaCreateImage +
 * vaGetImage/vaPutImage, or vaDeriveImage aliasing the surface) and buffers, and really encodes H.264: the
 * client writes SPS/PPS (as with every driver that takes no packed headers), the driver writes the slice NAL
 * from the parameter buffers it was given, the way a hardware encoder does:
 *   - an I picture (IDR when pic_fields.idr_pic_flag says so, NAL type 5, else type 1) is all I_PCM macroblocks:
 *     lossless, self-contained;
 *   - a P picture codes as I_PCM only the macroblocks that differ from the reference picture (the previous
 *     reconstruction, ReferenceFrames[0]) and skips the rest (P_Skip, motion vector 0: a copy of the reference),
 *     at most as many as the rate control's budget allows (bits_per_second / frame rate from the RateControl
 *     and FrameRate misc buffers; the rest catch up in later frames, as a real encoder's quality does);
 *   - the reconstruction (CurrPic) is what a decoder will hold: the slice QP is 0 (slice_qp_delta =
 *     -pic_init_qp), so no edge is ever deblocked and a decoder's picture equals it bit for bit.
 * The coded buffer is one VACodedBufferSegment owned by the driver (4-byte start code + slice NAL).
 *
 * Test knobs (environment):
 *   WLFAKE_FAIL_INIT=1   the driver's init fails
 *   WLFAKE_NO_ENCODE=1   the H.264 profiles are offered for decoding only (VAEntrypointVLD), as a decode-only GPU
 *   WLFAKE_LOG=path      one line per picture appended to path: what the client asked (type, IDR, frame_num,
 *                        bits_per_second, frame rate) and what was coded (bytes, I_PCM macroblocks)
 *   WLFAKE_FAIL_FRAME=N  the Nth vaEndPicture of this process (from 1) fails, once: a transient driver error
 *   WLFAKE_DIE_FRAME=N   from the Nth vaEndPicture of this process on, every picture and every later driver
 *                        init fails: the GPU is gone
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <va/va.h>
#include <va/va_backend.h>
#include <va/va_enc_h264.h>

#define FAKE_VENDOR "wl-webrtc fake VA driver (tests)"
#define MAX_CONFIGS 16
#define MAX_ATTRS 8
#define MAX_SURFACES 64
#define MAX_BUFFERS 256
#define MAX_IMAGES 16
#define MAX_CONTEXTS 4
#define MAX_DIM 8192

/* Object IDs: a base per kind + the slot, so that a stale or foreign ID is caught. */
#define SURFACE_BASE 0x1000u
#define BUFFER_BASE 0x2000u
#define IMAGE_BASE 0x3000u
#define CONTEXT_BASE 0x4000u

struct fake_config {
    int used;
    VAProfile profile;
    VAEntrypoint entrypoint;
    int n_attrs;
    VAConfigAttrib attrs[MAX_ATTRS];
};

struct fake_surface {
    int used;
    unsigned int width, height; /* allocated size (the client's, rounded up to even) */
    uint8_t *data;               /* NV12: Y (width x height), then interleaved UV (width x height/2) */
};

struct fake_buffer {
    int used;
    VABufferType type;
    unsigned int size, num;
    uint8_t *data;  /* owned unless `alias` */
    int alias;      /* a derived image's buffer: data is the surface's memory */
    /* coded buffers: the segment handed out by vaMapBuffer, and its bytes */
    VACodedBufferSegment segment;
    uint8_t *coded;
    size_t coded_len, coded_cap;
};

struct fake_image {
    int used;
    VAImage image;
    VASurfaceID derived_from; /* VA_INVALID_ID unless derived */
};

struct fake_context {
    int used;
    VAConfigID config;
    int width, height;
    VASurfaceID target;
    int have_seq;
    VAEncSequenceParameterBufferH264 seq;
    int have_pic, have_slice;
    VAEncPictureParameterBufferH264 pic;
    VAEncSliceParameterBufferH264 slice;
    uint32_t bits_per_second, target_percentage, framerate_num, framerate_den;
    unsigned int refresh_cursor; /* where the next P picture starts looking for changed macroblocks */
};

struct fake_driver {
    int no_encode;
    struct fake_config configs[MAX_CONFIGS];
    struct fake_surface surfaces[MAX_SURFACES];
    struct fake_buffer buffers[MAX_BUFFERS];
    struct fake_image images[MAX_IMAGES];
    struct fake_context contexts[MAX_CONTEXTS];
};

static struct fake_driver *drv(VADriverContextP ctx) { return (struct fake_driver *)ctx->pDriverData; }

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static long env_long(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : 0;
}

/* Pictures ended in this process, and whether the "GPU" is gone (WLFAKE_DIE_FRAME). */
static long pictures_ended;
static int gpu_gone;



static const VAProfile PROFILES[] = {
    VAProfileH264ConstrainedBaseline,
    VAProfileH264Main,
    VAProfileH264High,
};
#define N_PROFILES ((int)(sizeof(PROFILES) / sizeof(PROFILES[0])))


static int is_h264(VAProfile p)
{
    for (int i = 0; i < N_PROFILES; i++)
        if (PROFILES[i] == p)
            return 1;
    return 0;
}

static VAEntrypoint entrypoint_of(VADriverContextP ctx) { return drv(ctx)->no_encode ? VAEntrypointVLD : VAEntrypointEncSlice; }

/* Every entry not implemented: callers get a clear status, never a NULL call. */
static VAStatus unimplemented(void) { return VA_STATUS_ERROR_UNIMPLEMENTED; }


static VAStatus fake_query_config_profiles(VADriverContextP ctx, VAProfile *list, int *num)
{
    (void)ctx;
    for (int i = 0; i < N_PROFILES; i++)
        list[i] = PROFILES[i];
    *num = N_PROFILES;
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_query_config_entrypoints(VADriverContextP ctx, VAProfile profile, VAEntrypoint *list, int *num)
{
    if (!is_h264(profile)) {
        *num = 0;
        return VA_STATUS_ERROR_UNSUPPORTED_PROFILE;
    }
    list[0] = entrypoint_of(ctx);
    *num = 1;
    return VA_STATUS_SUCCESS;
}

/* The value of one attribute for H.264 encoding. */
static unsigned int attribute_value(VAConfigAttribType type)
{
    switch (type) {
    case VAConfigAttribRTFormat:
        return VA_RT_FORMAT_YUV420;
    case VAConfigAttribRateControl:
        return VA_RC_CBR | VA_RC_CQP;
    case VAConfigAttribEncPackedHeaders:
        return VA_ENC_PACKED_HEADER_NONE;
    case VAConfigAttribEncMaxRefFrames:
        return 1;
    case VAConfigAttribEncMaxSlices:
        return 1;
    default:
        return VA_ATTRIB_NOT_SUPPORTED;
    }
}

static VAStatus fake_get_config_attributes(VADriverContextP ctx, VAProfile profile, VAEntrypoint entrypoint,
                                           VAConfigAttrib *list, int num)
{
    if (!is_h264(profile))
        return VA_STATUS_ERROR_UNSUPPORTED_PROFILE;
    if (entrypoint != entrypoint_of(ctx))
        return VA_STATUS_ERROR_UNSUPPORTED_ENTRYPOINT;
    for (int i = 0; i < num; i++)
        list[i].value = attribute_value(list[i].type);
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_create_config(VADriverContextP ctx, VAProfile profile, VAEntrypoint entrypoint,
                                   VAConfigAttrib *attrs, int n, VAConfigID *id)
{
    struct fake_driver *d = drv(ctx);
    if (!is_h264(profile))
        return VA_STATUS_ERROR_UNSUPPORTED_PROFILE;
    if (entrypoint != entrypoint_of(ctx))
        return VA_STATUS_ERROR_UNSUPPORTED_ENTRYPOINT;
    if (n > MAX_ATTRS)
        return VA_STATUS_ERROR_INVALID_PARAMETER;
    for (int i = 0; i < n; i++) {
        unsigned int supported = attribute_value(attrs[i].type);
        if (supported == VA_ATTRIB_NOT_SUPPORTED)
            return VA_STATUS_ERROR_ATTR_NOT_SUPPORTED;
        if (attrs[i].type == VAConfigAttribRTFormat || attrs[i].type == VAConfigAttribRateControl) {
            if ((attrs[i].value & supported) == 0)
                return attrs[i].type == VAConfigAttribRTFormat ? VA_STATUS_ERROR_UNSUPPORTED_RT_FORMAT
                                                               : VA_STATUS_ERROR_INVALID_VALUE;
        }
    }
    for (int c = 0; c < MAX_CONFIGS; c++) {
        if (d->configs[c].used)
            continue;
        struct fake_config *cfg = &d->configs[c];
        cfg->used = 1;
        cfg->profile = profile;
        cfg->entrypoint = entrypoint;
        cfg->n_attrs = n;
        memcpy(cfg->attrs, attrs, (size_t)n * sizeof(*attrs));
        *id = (VAConfigID)c;
        return VA_STATUS_SUCCESS;
    }
    return VA_STATUS_ERROR_ALLOCATION_FAILED;
}

static struct fake_config *config_of(VADriverContextP ctx, VAConfigID id)
{
    if (id >= MAX_CONFIGS || !drv(ctx)->configs[id].used)
        return NULL;
    return &drv(ctx)->configs[id];
}

static VAStatus fake_destroy_config(VADriverContextP ctx, VAConfigID id)
{
    struct fake_config *cfg = config_of(ctx, id);
    if (!cfg)
        return VA_STATUS_ERROR_INVALID_CONFIG;
    cfg->used = 0;
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_query_config_attributes(VADriverContextP ctx, VAConfigID id, VAProfile *profile,
                                             VAEntrypoint *entrypoint, VAConfigAttrib *list, int *num)
{
    struct fake_config *cfg = config_of(ctx, id);
    if (!cfg)
        return VA_STATUS_ERROR_INVALID_CONFIG;
    *profile = cfg->profile;
    *entrypoint = cfg->entrypoint;
    memcpy(list, cfg->attrs, (size_t)cfg->n_attrs * sizeof(*list));
    *num = cfg->n_attrs;
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_query_image_formats(VADriverContextP ctx, VAImageFormat *list, int *num)
{
    (void)ctx;
    memset(&list[0], 0, sizeof(list[0]));
    list[0].fourcc = VA_FOURCC_NV12;
    list[0].byte_order = VA_LSB_FIRST;
    list[0].bits_per_pixel = 12;
    *num = 1;
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_query_subpicture_formats(VADriverContextP ctx, VAImageFormat *list, unsigned int *flags,
                                              unsigned int *num)
{
    (void)ctx;
    (void)list;
    (void)flags;
    *num = 0;
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_query_display_attributes(VADriverContextP ctx, VADisplayAttribute *list, int *num)
{
    (void)ctx;
    (void)list;
    *num = 0;
    return VA_STATUS_SUCCESS;
}


/* ---- surfaces ---------------------------------------------------------------------------------------------- */

static struct fake_surface *surface_of(VADriverContextP ctx, VASurfaceID id)
{
    unsigned int i = id - SURFACE_BASE;
    if (id < SURFACE_BASE || i >= MAX_SURFACES || !drv(ctx)->surfaces[i].used)
        return NULL;
    return &drv(ctx)->surfaces[i];
}

static VAStatus fake_create_surfaces2(VADriverContextP ctx, unsigned int format, unsigned int width,
                                      unsigned int height, VASurfaceID *out, unsigned int num,
                                      VASurfaceAttrib *attrs, unsigned int n_attrs)
{
    struct fake_driver *d = drv(ctx);
    if (format != VA_RT_FORMAT_YUV420)
        return VA_STATUS_ERROR_UNSUPPORTED_RT_FORMAT;
    if (width == 0 || height == 0 || width > MAX_DIM || height > MAX_DIM)
        return VA_STATUS_ERROR_RESOLUTION_NOT_SUPPORTED;
    for (unsigned int a = 0; a < n_attrs; a++) {
        if (!(attrs[a].flags & VA_SURFACE_ATTRIB_SETTABLE))
            continue;
        switch (attrs[a].type) {
        case VASurfaceAttribPixelFormat:
            if ((uint32_t)attrs[a].value.value.i != VA_FOURCC_NV12)
                return VA_STATUS_ERROR_INVALID_IMAGE_FORMAT;
            break;
        case VASurfaceAttribUsageHint:
            break;
        case VASurfaceAttribMemoryType:
            if ((uint32_t)attrs[a].value.value.i != VA_SURFACE_ATTRIB_MEM_TYPE_VA)
                return VA_STATUS_ERROR_UNSUPPORTED_MEMORY_TYPE;
            break;
        default:
            return VA_STATUS_ERROR_ATTR_NOT_SUPPORTED;
        }
    }
    unsigned int w = (width + 1) & ~1u, h = (height + 1) & ~1u;
    unsigned int made = 0;
    for (unsigned int s = 0; s < MAX_SURFACES && made < num; s++) {
        struct fake_surface *surf = &d->surfaces[s];
        if (surf->used)
            continue;
        surf->data = calloc((size_t)w * h * 3 / 2, 1);
        if (!surf->data)
            break;
        memset(surf->data + (size_t)w * h, 128, (size_t)w * h / 2);
        surf->used = 1;
        surf->width = w;
        surf->height = h;
        out[made++] = SURFACE_BASE + s;
    }
    if (made == num)
        return VA_STATUS_SUCCESS;
    for (unsigned int i = 0; i < made; i++) {
        struct fake_surface *surf = surface_of(ctx, out[i]);
        free(surf->data);
        memset(surf, 0, sizeof(*surf));
    }
    return VA_STATUS_ERROR_ALLOCATION_FAILED;
}

static VAStatus fake_create_surfaces(VADriverContextP ctx, int width, int height, int format, int num,
                                     VASurfaceID *out)
{
    if (width <= 0 || height <= 0 || num <= 0)
        return VA_STATUS_ERROR_INVALID_PARAMETER;
    return fake_create_surfaces2(ctx, (unsigned int)format, (unsigned int)width, (unsigned int)height, out,
                                 (unsigned int)num, NULL, 0);
}

static VAStatus fake_destroy_surfaces(VADriverContextP ctx, VASurfaceID *list, int num)
{
    for (int i = 0; i < num; i++) {
        struct fake_surface *surf = surface_of(ctx, list[i]);
        if (!surf)
            return VA_STATUS_ERROR_INVALID_SURFACE;
        free(surf->data);
        memset(surf, 0, sizeof(*surf));
    }
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_query_surface_attributes(VADriverContextP ctx, VAConfigID config, VASurfaceAttrib *list,
                                              unsigned int *num)
{
    (void)ctx;
    (void)config;
    VASurfaceAttrib attrs[4];
    memset(attrs, 0, sizeof(attrs));
    attrs[0].type = VASurfaceAttribPixelFormat;
    attrs[0].flags = VA_SURFACE_ATTRIB_GETTABLE | VA_SURFACE_ATTRIB_SETTABLE;
    attrs[0].value.type = VAGenericValueTypeInteger;
    attrs[0].value.value.i = VA_FOURCC_NV12;
    attrs[1].type = VASurfaceAttribMemoryType;
    attrs[1].flags = VA_SURFACE_ATTRIB_GETTABLE | VA_SURFACE_ATTRIB_SETTABLE;
    attrs[1].value.type = VAGenericValueTypeInteger;
    attrs[1].value.value.i = VA_SURFACE_ATTRIB_MEM_TYPE_VA;
    attrs[2].type = VASurfaceAttribMaxWidth;
    attrs[2].flags = VA_SURFACE_ATTRIB_GETTABLE;
    attrs[2].value.type = VAGenericValueTypeInteger;
    attrs[2].value.value.i = MAX_DIM;
    attrs[3] = attrs[2];
    attrs[3].type = VASurfaceAttribMaxHeight;
    unsigned int n = sizeof(attrs) / sizeof(attrs[0]);
    if (!list) {
        *num = n;
        return VA_STATUS_SUCCESS;
    }
    if (*num < n) {
        *num = n;
        return VA_STATUS_ERROR_MAX_NUM_EXCEEDED;
    }
    memcpy(list, attrs, sizeof(attrs));
    *num = n;
    return VA_STATUS_SUCCESS;
}

/* Encoding is synchronous (vaEndPicture): every surface is always ready. */
static VAStatus fake_sync_surface(VADriverContextP ctx, VASurfaceID id)
{
    return surface_of(ctx, id) ? VA_STATUS_SUCCESS : VA_STATUS_ERROR_INVALID_SURFACE;
}

static VAStatus fake_query_surface_status(VADriverContextP ctx, VASurfaceID id, VASurfaceStatus *status)
{
    if (!surface_of(ctx, id))
        return VA_STATUS_ERROR_INVALID_SURFACE;
    *status = VASurfaceReady;
    return VA_STATUS_SUCCESS;
}

/* ---- buffers ----------------------------------------------------------------------------------------------- */

static struct fake_buffer *buffer_of(VADriverContextP ctx, VABufferID id)
{
    unsigned int i = id - BUFFER_BASE;
    if (id < BUFFER_BASE || i >= MAX_BUFFERS || !drv(ctx)->buffers[i].used)
        return NULL;
    return &drv(ctx)->buffers[i];
}

static struct fake_buffer *new_buffer(VADriverContextP ctx, VABufferID *id)
{
    struct fake_driver *d = drv(ctx);
    for (unsigned int i = 0; i < MAX_BUFFERS; i++) {
        if (d->buffers[i].used)
            continue;
        memset(&d->buffers[i], 0, sizeof(d->buffers[i]));
        d->buffers[i].used = 1;
        *id = BUFFER_BASE + i;
        return &d->buffers[i];
    }
    return NULL;
}

static void free_buffer(struct fake_buffer *b)
{
    if (!b->alias)
        free(b->data);
    free(b->coded);
    memset(b, 0, sizeof(*b));
}

static VAStatus fake_create_buffer(VADriverContextP ctx, VAContextID context, VABufferType type, unsigned int size,
                                   unsigned int num, void *data, VABufferID *id)
{
    (void)context;
    if (size == 0 || num == 0 || (size_t)size * num > (256u << 20))
        return VA_STATUS_ERROR_INVALID_PARAMETER;
    struct fake_buffer *b = new_buffer(ctx, id);
    if (!b)
        return VA_STATUS_ERROR_ALLOCATION_FAILED;
    b->type = type;
    b->size = size;
    b->num = num;
    if (type != VAEncCodedBufferType) {
        b->data = calloc(size, num);
        if (!b->data) {
            free_buffer(b);
            return VA_STATUS_ERROR_ALLOCATION_FAILED;
        }
        if (data)
            memcpy(b->data, data, (size_t)size * num);
    }
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_buffer_set_num_elements(VADriverContextP ctx, VABufferID id, unsigned int num)
{
    struct fake_buffer *b = buffer_of(ctx, id);
    if (!b)
        return VA_STATUS_ERROR_INVALID_BUFFER;
    return num <= b->num ? (b->num = num, VA_STATUS_SUCCESS) : VA_STATUS_ERROR_INVALID_PARAMETER;
}

static VAStatus fake_map_buffer(VADriverContextP ctx, VABufferID id, void **out)
{
    struct fake_buffer *b = buffer_of(ctx, id);
    if (!b)
        return VA_STATUS_ERROR_INVALID_BUFFER;
    if (b->type == VAEncCodedBufferType) {
        memset(&b->segment, 0, sizeof(b->segment));
        b->segment.size = (uint32_t)b->coded_len;
        b->segment.buf = b->coded;
        b->segment.status = VA_CODED_BUF_STATUS_SINGLE_NALU;
        *out = &b->segment;
    } else {
        *out = b->data;
    }
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_unmap_buffer(VADriverContextP ctx, VABufferID id)
{
    return buffer_of(ctx, id) ? VA_STATUS_SUCCESS : VA_STATUS_ERROR_INVALID_BUFFER;
}

static VAStatus fake_destroy_buffer(VADriverContextP ctx, VABufferID id)
{
    struct fake_buffer *b = buffer_of(ctx, id);
    if (!b)
        return VA_STATUS_ERROR_INVALID_BUFFER;
    free_buffer(b);
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_buffer_info(VADriverContextP ctx, VABufferID id, VABufferType *type, unsigned int *size,
                                 unsigned int *num)
{
    struct fake_buffer *b = buffer_of(ctx, id);
    if (!b)
        return VA_STATUS_ERROR_INVALID_BUFFER;
    *type = b->type;
    *size = b->size;
    *num = b->num;
    return VA_STATUS_SUCCESS;
}

/* ---- images: NV12, tightly packed ------------------------------------------------------------------------- */

static struct fake_image *image_of(VADriverContextP ctx, VAImageID id)
{
    unsigned int i = id - IMAGE_BASE;
    if (id < IMAGE_BASE || i >= MAX_IMAGES || !drv(ctx)->images[i].used)
        return NULL;
    return &drv(ctx)->images[i];
}

static VAStatus new_image(VADriverContextP ctx, int width, int height, uint8_t *alias, VAImage *out,
                          struct fake_image **made)
{
    struct fake_driver *d = drv(ctx);
    if (width <= 0 || height <= 0 || width > MAX_DIM || height > MAX_DIM)
        return VA_STATUS_ERROR_RESOLUTION_NOT_SUPPORTED;
    unsigned int w = ((unsigned int)width + 1) & ~1u, h = ((unsigned int)height + 1) & ~1u;
    for (unsigned int i = 0; i < MAX_IMAGES; i++) {
        struct fake_image *img = &d->images[i];
        if (img->used)
            continue;
        VABufferID buf;
        struct fake_buffer *b = new_buffer(ctx, &buf);
        if (!b)
            return VA_STATUS_ERROR_ALLOCATION_FAILED;
        b->type = VAImageBufferType;
        b->size = w * h * 3 / 2;
        b->num = 1;
        if (alias) {
            b->data = alias;
            b->alias = 1;
        } else if (!(b->data = calloc(b->size, 1))) {
            free_buffer(b);
            return VA_STATUS_ERROR_ALLOCATION_FAILED;
        }
        memset(img, 0, sizeof(*img));
        img->used = 1;
        img->derived_from = VA_INVALID_ID;
        VAImage *im = &img->image;
        im->image_id = IMAGE_BASE + i;
        im->format.fourcc = VA_FOURCC_NV12;
        im->format.byte_order = VA_LSB_FIRST;
        im->format.bits_per_pixel = 12;
        im->buf = buf;
        im->width = (uint16_t)w;
        im->height = (uint16_t)h;
        im->data_size = b->size;
        im->num_planes = 2;
        im->pitches[0] = w;
        im->pitches[1] = w;
        im->offsets[0] = 0;
        im->offsets[1] = w * h;
        *out = *im;
        *made = img;
        return VA_STATUS_SUCCESS;
    }
    return VA_STATUS_ERROR_ALLOCATION_FAILED;
}

static VAStatus fake_create_image(VADriverContextP ctx, VAImageFormat *format, int width, int height, VAImage *out)
{
    if (format->fourcc != VA_FOURCC_NV12)
        return VA_STATUS_ERROR_INVALID_IMAGE_FORMAT;
    struct fake_image *img;
    return new_image(ctx, width, height, NULL, out, &img);
}

static VAStatus fake_derive_image(VADriverContextP ctx, VASurfaceID surface, VAImage *out)
{
    struct fake_surface *surf = surface_of(ctx, surface);
    if (!surf)
        return VA_STATUS_ERROR_INVALID_SURFACE;
    struct fake_image *img;
    VAStatus st = new_image(ctx, (int)surf->width, (int)surf->height, surf->data, out, &img);
    if (st == VA_STATUS_SUCCESS)
        img->derived_from = surface;
    return st;
}

static VAStatus fake_destroy_image(VADriverContextP ctx, VAImageID id)
{
    struct fake_image *img = image_of(ctx, id);
    if (!img)
        return VA_STATUS_ERROR_INVALID_IMAGE;
    struct fake_buffer *b = buffer_of(ctx, img->image.buf);
    if (b)
        free_buffer(b);
    memset(img, 0, sizeof(*img));
    return VA_STATUS_SUCCESS;
}

/* Copy a w x h NV12 rectangle at (x, y) between a surface and an image (both tightly packed NV12). */
static void copy_nv12(uint8_t *dst, unsigned int dst_w, unsigned int dst_h, const uint8_t *src, unsigned int src_w,
                      unsigned int src_h, unsigned int sx, unsigned int sy, unsigned int dx, unsigned int dy,
                      unsigned int w, unsigned int h)
{
    sx &= ~1u, sy &= ~1u, dx &= ~1u, dy &= ~1u;
    if (sx >= src_w || sy >= src_h || dx >= dst_w || dy >= dst_h)
        return;
    if (w > src_w - sx)
        w = src_w - sx;
    if (w > dst_w - dx)
        w = dst_w - dx;
    if (h > src_h - sy)
        h = src_h - sy;
    if (h > dst_h - dy)
        h = dst_h - dy;
    for (unsigned int r = 0; r < h; r++)
        memcpy(dst + (size_t)(dy + r) * dst_w + dx, src + (size_t)(sy + r) * src_w + sx, w);
    const uint8_t *suv = src + (size_t)src_w * src_h;
    uint8_t *duv = dst + (size_t)dst_w * dst_h;
    for (unsigned int r = 0; r < h / 2; r++)
        memcpy(duv + (size_t)(dy / 2 + r) * dst_w + dx, suv + (size_t)(sy / 2 + r) * src_w + sx, w & ~1u);
}

static VAStatus fake_get_image(VADriverContextP ctx, VASurfaceID surface, int x, int y, unsigned int w,
                               unsigned int h, VAImageID image)
{
    struct fake_surface *surf = surface_of(ctx, surface);
    struct fake_image *img = image_of(ctx, image);
    if (!surf)
        return VA_STATUS_ERROR_INVALID_SURFACE;
    if (!img || x < 0 || y < 0)
        return VA_STATUS_ERROR_INVALID_IMAGE;
    struct fake_buffer *b = buffer_of(ctx, img->image.buf);
    if (!b)
        return VA_STATUS_ERROR_INVALID_BUFFER;
    if (b->data != surf->data)
        copy_nv12(b->data, img->image.width, img->image.height, surf->data, surf->width, surf->height,
                  (unsigned int)x, (unsigned int)y, 0, 0, w, h);
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_put_image(VADriverContextP ctx, VASurfaceID surface, VAImageID image, int sx, int sy,
                               unsigned int sw, unsigned int sh, int dx, int dy, unsigned int dw, unsigned int dh)
{
    struct fake_surface *surf = surface_of(ctx, surface);
    struct fake_image *img = image_of(ctx, image);
    if (!surf)
        return VA_STATUS_ERROR_INVALID_SURFACE;
    if (!img || sx < 0 || sy < 0 || dx < 0 || dy < 0)
        return VA_STATUS_ERROR_INVALID_IMAGE;
    if (sw != dw || sh != dh)
        return VA_STATUS_ERROR_UNIMPLEMENTED; /* no scaling */
    struct fake_buffer *b = buffer_of(ctx, img->image.buf);
    if (!b)
        return VA_STATUS_ERROR_INVALID_BUFFER;
    if (b->data != surf->data)
        copy_nv12(surf->data, surf->width, surf->height, b->data, img->image.width, img->image.height,
                  (unsigned int)sx, (unsigned int)sy, (unsigned int)dx, (unsigned int)dy, sw, sh);
    return VA_STATUS_SUCCESS;
}

/* ---- contexts and pictures --------------------------------------------------------------------------------- */

static struct fake_context *context_of(VADriverContextP ctx, VAContextID id)
{
    unsigned int i = id - CONTEXT_BASE;
    if (id < CONTEXT_BASE || i >= MAX_CONTEXTS || !drv(ctx)->contexts[i].used)
        return NULL;
    return &drv(ctx)->contexts[i];
}

static VAStatus fake_create_context(VADriverContextP ctx, VAConfigID config, int width, int height, int flag,
                                    VASurfaceID *targets, int n_targets, VAContextID *out)
{
    (void)flag;
    (void)targets;
    (void)n_targets;
    struct fake_config *cfg = config_of(ctx, config);
    if (!cfg)
        return VA_STATUS_ERROR_INVALID_CONFIG;
    if (cfg->entrypoint != VAEntrypointEncSlice)
        return VA_STATUS_ERROR_UNSUPPORTED_ENTRYPOINT;
    if (width <= 0 || height <= 0 || width > MAX_DIM || height > MAX_DIM)
        return VA_STATUS_ERROR_RESOLUTION_NOT_SUPPORTED;
    for (unsigned int i = 0; i < MAX_CONTEXTS; i++) {
        struct fake_context *c = &drv(ctx)->contexts[i];
        if (c->used)
            continue;
        memset(c, 0, sizeof(*c));
        c->used = 1;
        c->config = config;
        c->width = width;
        c->height = height;
        c->target = VA_INVALID_ID;
        c->framerate_num = 30;
        c->framerate_den = 1;
        *out = CONTEXT_BASE + i;
        return VA_STATUS_SUCCESS;
    }
    return VA_STATUS_ERROR_ALLOCATION_FAILED;
}

static VAStatus fake_destroy_context(VADriverContextP ctx, VAContextID id)
{
    struct fake_context *c = context_of(ctx, id);
    if (!c)
        return VA_STATUS_ERROR_INVALID_CONTEXT;
    memset(c, 0, sizeof(*c));
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_begin_picture(VADriverContextP ctx, VAContextID id, VASurfaceID target)
{
    struct fake_context *c = context_of(ctx, id);
    if (!c)
        return VA_STATUS_ERROR_INVALID_CONTEXT;
    if (!surface_of(ctx, target))
        return VA_STATUS_ERROR_INVALID_SURFACE;
    c->target = target;
    c->have_pic = c->have_slice = 0;
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_render_picture(VADriverContextP ctx, VAContextID id, VABufferID *bufs, int num)
{
    struct fake_context *c = context_of(ctx, id);
    if (!c)
        return VA_STATUS_ERROR_INVALID_CONTEXT;
    for (int i = 0; i < num; i++) {
        struct fake_buffer *b = buffer_of(ctx, bufs[i]);
        if (!b)
            return VA_STATUS_ERROR_INVALID_BUFFER;
        switch (b->type) {
        case VAEncSequenceParameterBufferType:
            if (b->size < sizeof(c->seq))
                return VA_STATUS_ERROR_INVALID_PARAMETER;
            memcpy(&c->seq, b->data, sizeof(c->seq));
            c->have_seq = 1;
            if (c->seq.bits_per_second)
                c->bits_per_second = c->seq.bits_per_second;
            break;
        case VAEncPictureParameterBufferType:
            if (b->size < sizeof(c->pic))
                return VA_STATUS_ERROR_INVALID_PARAMETER;
            memcpy(&c->pic, b->data, sizeof(c->pic));
            c->have_pic = 1;
            break;
        case VAEncSliceParameterBufferType:
            if (b->size < sizeof(c->slice))
                return VA_STATUS_ERROR_INVALID_PARAMETER;
            if (c->have_slice)
                return VA_STATUS_ERROR_UNIMPLEMENTED; /* one slice per picture */
            memcpy(&c->slice, b->data, sizeof(c->slice));
            c->have_slice = 1;
            break;
        case VAEncMiscParameterBufferType: {
            if (b->size < sizeof(VAEncMiscParameterBuffer))
                return VA_STATUS_ERROR_INVALID_PARAMETER;
            VAEncMiscParameterBuffer *misc = (VAEncMiscParameterBuffer *)b->data;
            size_t payload = b->size - sizeof(VAEncMiscParameterBuffer);
            if (misc->type == VAEncMiscParameterTypeRateControl && payload >= sizeof(VAEncMiscParameterRateControl)) {
                VAEncMiscParameterRateControl *rc = (VAEncMiscParameterRateControl *)misc->data;
                c->bits_per_second = rc->bits_per_second;
                c->target_percentage = rc->target_percentage;
            } else if (misc->type == VAEncMiscParameterTypeFrameRate &&
                       payload >= sizeof(VAEncMiscParameterFrameRate)) {
                VAEncMiscParameterFrameRate *fr = (VAEncMiscParameterFrameRate *)misc->data;
                /* numerator in the low 16 bits, denominator in the high 16 (0 = 1) */
                c->framerate_num = fr->framerate & 0xffff;
                c->framerate_den = fr->framerate >> 16 ? fr->framerate >> 16 : 1;
            }
            break;
        }
        default:
            break; /* HRD, quality level, packed headers the config did not ask for: ignored */
        }
    }
    return VA_STATUS_SUCCESS;
}

/* ---- the H.264 slice writer -------------------------------------------------------------------------------- */

struct bits {
    uint8_t *buf;
    size_t len, cap; /* whole bytes written */
    uint32_t acc;    /* pending bits, MSB first */
    int n;           /* how many */
    int oom;
};

static void bits_byte(struct bits *b, uint8_t v)
{
    if (b->len == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        uint8_t *p = realloc(b->buf, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->buf = p;
        b->cap = cap;
    }
    b->buf[b->len++] = v;
}

static void put_bits(struct bits *b, uint32_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        b->acc = (b->acc << 1) | ((v >> i) & 1);
        if (++b->n == 8) {
            bits_byte(b, (uint8_t)b->acc);
            b->acc = 0;
            b->n = 0;
        }
    }
}

static void put_ue(struct bits *b, uint32_t v)
{
    uint64_t x = (uint64_t)v + 1;
    int len = 0;
    while ((x >> len) > 1)
        len++;
    put_bits(b, 0, len);
    put_bits(b, (uint32_t)x, len + 1);
}

static void put_se(struct bits *b, int32_t v) { put_ue(b, v > 0 ? (uint32_t)(2 * v - 1) : (uint32_t)(-2 * (int64_t)v)); }

static void align_zero(struct bits *b)
{
    while (b->n)
        put_bits(b, 0, 1);
}

/* Append `rbsp` as a NAL unit (4-byte start code, header, emulation prevention) to the coded buffer. */
static int append_nal(struct fake_buffer *coded, uint8_t header, const uint8_t *rbsp, size_t len)
{
    size_t need = coded->coded_len + 5 + len + len / 2 + 16;
    if (need > coded->coded_cap) {
        uint8_t *p = realloc(coded->coded, need);
        if (!p)
            return 0;
        coded->coded = p;
        coded->coded_cap = need;
    }
    uint8_t *o = coded->coded + coded->coded_len;
    size_t k = 0;
    o[k++] = 0, o[k++] = 0, o[k++] = 0, o[k++] = 1, o[k++] = header;
    int zeros = 0;
    for (size_t i = 0; i < len; i++) {
        if (zeros == 2 && rbsp[i] <= 3) {
            o[k++] = 3;
            zeros = 0;
        }
        o[k++] = rbsp[i];
        zeros = rbsp[i] == 0 ? zeros + 1 : 0;
    }
    coded->coded_len += k;
    return 1;
}

/* One macroblock as I_PCM: alignment, 256 luma, 64 Cb, 64 Cr samples (pixels beyond the surface repeat the edge). */
static void put_pcm(struct bits *b, const struct fake_surface *src, unsigned int mbx, unsigned int mby)
{
    align_zero(b);
    unsigned int w = src->width, h = src->height;
    const uint8_t *uv = src->data + (size_t)w * h;
    for (unsigned int y = 0; y < 16; y++) {
        unsigned int sy = mby * 16 + y < h ? mby * 16 + y : h - 1;
        for (unsigned int x = 0; x < 16; x++) {
            unsigned int sx = mbx * 16 + x < w ? mbx * 16 + x : w - 1;
            bits_byte(b, src->data[(size_t)sy * w + sx]);
        }
    }
    for (unsigned int plane = 0; plane < 2; plane++)
        for (unsigned int y = 0; y < 8; y++) {
            unsigned int sy = mby * 8 + y < h / 2 ? mby * 8 + y : h / 2 - 1;
            for (unsigned int x = 0; x < 8; x++) {
                unsigned int sx = mbx * 8 + x < w / 2 ? mbx * 8 + x : w / 2 - 1;
                bits_byte(b, uv[(size_t)sy * w + sx * 2 + plane]);
            }
        }
}

/* Copy one macroblock's samples from `src` to `dst` (same size), clipped to the surface. */
static void copy_mb(struct fake_surface *dst, const struct fake_surface *src, unsigned int mbx, unsigned int mby)
{
    unsigned int w = src->width, h = src->height;
    unsigned int x0 = mbx * 16, y0 = mby * 16;
    unsigned int cw = x0 + 16 <= w ? 16 : w - x0, ch = y0 + 16 <= h ? 16 : h - y0;
    for (unsigned int y = 0; y < ch; y++)
        memcpy(dst->data + (size_t)(y0 + y) * w + x0, src->data + (size_t)(y0 + y) * w + x0, cw);
    size_t uvoff = (size_t)w * h;
    for (unsigned int y = 0; y < ch / 2; y++)
        memcpy(dst->data + uvoff + (size_t)(y0 / 2 + y) * w + x0, src->data + uvoff + (size_t)(y0 / 2 + y) * w + x0,
               cw);
}

static int mb_differs(const struct fake_surface *a, const struct fake_surface *b, unsigned int mbx, unsigned int mby)
{
    unsigned int w = a->width, h = a->height;
    unsigned int x0 = mbx * 16, y0 = mby * 16;
    unsigned int cw = x0 + 16 <= w ? 16 : w - x0, ch = y0 + 16 <= h ? 16 : h - y0;
    for (unsigned int y = 0; y < ch; y++)
        if (memcmp(a->data + (size_t)(y0 + y) * w + x0, b->data + (size_t)(y0 + y) * w + x0, cw))
            return 1;
    size_t uvoff = (size_t)w * h;
    for (unsigned int y = 0; y < ch / 2; y++)
        if (memcmp(a->data + uvoff + (size_t)(y0 / 2 + y) * w + x0, b->data + uvoff + (size_t)(y0 / 2 + y) * w + x0, cw))
            return 1;
    return 0;
}

/* Bits an I_PCM macroblock costs in a P slice (skip run, mb_type, alignment, 384 samples), roughly. */
#define PCM_MB_BITS (384 * 8 + 24)

static void log_picture(const struct fake_context *c, int is_i, int idr, size_t bytes, unsigned int pcm_mbs,
                        unsigned int pending)
{
    const char *path = getenv("WLFAKE_LOG");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    fprintf(f, "picture type=%s idr=%d frame_num=%u bits_per_second=%u fps=%u/%u bytes=%zu pcm_mbs=%u pending=%u\n",
            is_i ? "I" : "P", idr, c->pic.frame_num, c->bits_per_second, c->framerate_num, c->framerate_den, bytes,
            pcm_mbs, pending);
    fclose(f);
}

static VAStatus encode_picture(VADriverContextP ctx, struct fake_context *c)
{
    if (!c->have_seq || !c->have_pic || !c->have_slice)
        return VA_STATUS_ERROR_INVALID_PARAMETER;
    const VAEncSequenceParameterBufferH264 *seq = &c->seq;
    const VAEncPictureParameterBufferH264 *pic = &c->pic;
    const VAEncSliceParameterBufferH264 *sl = &c->slice;
    if (pic->pic_fields.bits.entropy_coding_mode_flag)
        return VA_STATUS_ERROR_UNIMPLEMENTED; /* CAVLC only */
    unsigned int poc_type = seq->seq_fields.bits.pic_order_cnt_type;
    if (poc_type == 1 || !seq->seq_fields.bits.frame_mbs_only_flag)
        return VA_STATUS_ERROR_UNIMPLEMENTED;
    struct fake_surface *input = surface_of(ctx, c->target);
    struct fake_surface *recon = surface_of(ctx, pic->CurrPic.picture_id);
    struct fake_buffer *coded = buffer_of(ctx, pic->coded_buf);
    if (!input || !recon)
        return VA_STATUS_ERROR_INVALID_SURFACE;
    if (!coded || coded->type != VAEncCodedBufferType)
        return VA_STATUS_ERROR_INVALID_BUFFER;
    unsigned int mbw = seq->picture_width_in_mbs, mbh = seq->picture_height_in_mbs;
    if (mbw == 0 || mbh == 0 || input->width != recon->width || input->height != recon->height ||
        (mbw - 1) * 16 >= input->width || (mbh - 1) * 16 >= input->height)
        return VA_STATUS_ERROR_INVALID_PARAMETER;
    int is_i = sl->slice_type % 5 == 2;
    int is_p = sl->slice_type % 5 == 0;
    if (!is_i && !is_p)
        return VA_STATUS_ERROR_UNIMPLEMENTED; /* no B, SP, SI */
    struct fake_surface *ref = NULL;
    if (is_p) {
        ref = surface_of(ctx, sl->RefPicList0[0].picture_id);
        if (!ref || ref->width != input->width || ref->height != input->height)
            return VA_STATUS_ERROR_INVALID_SURFACE;
    }
    int idr = pic->pic_fields.bits.idr_pic_flag;
    if (idr && !is_i)
        return VA_STATUS_ERROR_INVALID_PARAMETER;

    struct bits b = {0};
    /* slice header (7.3.3), for what this driver offers: CAVLC, frames only, one slice, no weighted prediction */
    put_ue(&b, 0); /* first_mb_in_slice */
    put_ue(&b, sl->slice_type);
    put_ue(&b, pic->pic_parameter_set_id);
    unsigned int frame_num_bits = seq->seq_fields.bits.log2_max_frame_num_minus4 + 4;
    put_bits(&b, pic->frame_num & ((1u << frame_num_bits) - 1), (int)frame_num_bits);
    if (idr)
        put_ue(&b, sl->idr_pic_id);
    if (poc_type == 0) {
        unsigned int poc_bits = seq->seq_fields.bits.log2_max_pic_order_cnt_lsb_minus4 + 4;
        put_bits(&b, sl->pic_order_cnt_lsb & ((1u << poc_bits) - 1), (int)poc_bits);
    }
    if (is_p) {
        put_bits(&b, sl->num_ref_idx_active_override_flag, 1);
        if (sl->num_ref_idx_active_override_flag)
            put_ue(&b, sl->num_ref_idx_l0_active_minus1);
        put_bits(&b, 0, 1); /* ref_pic_list_modification_flag_l0 */
    }
    if (pic->pic_fields.bits.reference_pic_flag) {
        if (idr) {
            put_bits(&b, 0, 1); /* no_output_of_prior_pics_flag */
            put_bits(&b, 0, 1); /* long_term_reference_flag */
        } else {
            put_bits(&b, 0, 1); /* adaptive_ref_pic_marking_mode_flag */
        }
    }
    put_se(&b, -(int32_t)pic->pic_init_qp); /* slice QP 0: I_PCM and skips are never deblocked */
    if (pic->pic_fields.bits.deblocking_filter_control_present_flag) {
        put_ue(&b, sl->disable_deblocking_filter_idc);
        if (sl->disable_deblocking_filter_idc != 1) {
            put_se(&b, sl->slice_alpha_c0_offset_div2);
            put_se(&b, sl->slice_beta_offset_div2);
        }
    }

    /* slice data (7.3.4) */
    unsigned int total = mbw * mbh, pcm = 0, pending = 0;
    if (is_i) {
        for (unsigned int mb = 0; mb < total; mb++) {
            put_ue(&b, 25); /* I_PCM */
            put_pcm(&b, input, mb % mbw, mb / mbw);
        }
        memcpy(recon->data, input->data, (size_t)input->width * input->height * 3 / 2);
        pcm = total;
    } else {
        /* The budget of this picture; at least one macroblock, so that a picture always converges. */
        double fps = c->framerate_num ? (double)c->framerate_num / c->framerate_den : 30.0;
        double pct = c->target_percentage ? c->target_percentage / 100.0 : 1.0;
        double budget = c->bits_per_second ? c->bits_per_second * pct / fps : 1e12;
        unsigned int allowed = budget / PCM_MB_BITS >= 1 ? (unsigned int)(budget / PCM_MB_BITS) : 1;
        if (recon != ref)
            memcpy(recon->data, ref->data, (size_t)ref->width * ref->height * 3 / 2);
        /* Which macroblocks differ; code `allowed` of them from the refresh cursor on, in raster order. */
        uint8_t *code = calloc(total, 1);
        if (!code) {
            free(b.buf);
            return VA_STATUS_ERROR_ALLOCATION_FAILED;
        }
        unsigned int start = c->refresh_cursor % total, last = start;
        for (unsigned int k = 0; k < total; k++) {
            unsigned int mb = (start + k) % total;
            if (!mb_differs(input, ref, mb % mbw, mb / mbw))
                continue;
            if (pcm < allowed) {
                code[mb] = 1;
                pcm++;
                last = mb;
            } else {
                pending++;
            }
        }
        c->refresh_cursor = pending ? last + 1 : 0;
        unsigned int run = 0;
        for (unsigned int mb = 0; mb < total; mb++) {
            if (!code[mb]) {
                run++;
                continue;
            }
            put_ue(&b, run);
            run = 0;
            put_ue(&b, 30); /* I_PCM in a P slice (5 + 25) */
            put_pcm(&b, input, mb % mbw, mb / mbw);
            copy_mb(recon, input, mb % mbw, mb / mbw);
        }
        if (run)
            put_ue(&b, run);
        free(code);
    }
    put_bits(&b, 1, 1); /* rbsp_stop_one_bit */
    align_zero(&b);
    if (b.oom) {
        free(b.buf);
        return VA_STATUS_ERROR_ALLOCATION_FAILED;
    }
    uint8_t nal_ref_idc = pic->pic_fields.bits.reference_pic_flag ? 3 : 0;
    coded->coded_len = 0;
    int ok = append_nal(coded, (uint8_t)(nal_ref_idc << 5 | (idr ? 5 : 1)), b.buf, b.len);
    free(b.buf);
    if (!ok)
        return VA_STATUS_ERROR_ALLOCATION_FAILED;
    log_picture(c, is_i, idr, coded->coded_len, pcm, pending);
    return VA_STATUS_SUCCESS;
}

static VAStatus fake_end_picture(VADriverContextP ctx, VAContextID id)
{
    struct fake_context *c = context_of(ctx, id);
    if (!c)
        return VA_STATUS_ERROR_INVALID_CONTEXT;
    pictures_ended++;
    long fail = env_long("WLFAKE_FAIL_FRAME"), die = env_long("WLFAKE_DIE_FRAME");
    if (die > 0 && pictures_ended >= die)
        gpu_gone = 1;
    if (gpu_gone || (fail > 0 && pictures_ended == fail))
        return VA_STATUS_ERROR_HW_BUSY;
    return encode_picture(ctx, c);
}

static VAStatus fake_terminate(VADriverContextP ctx)
{
    struct fake_driver *d = drv(ctx);
    for (unsigned int i = 0; i < MAX_SURFACES; i++)
        free(d->surfaces[i].data);
    for (unsigned int i = 0; i < MAX_BUFFERS; i++)
        if (d->buffers[i].used)
            free_buffer(&d->buffers[i]);
    free(d);
    ctx->pDriverData = NULL;
    return VA_STATUS_SUCCESS;
}

VAStatus __vaDriverInit_1_17(VADriverContextP ctx);

VAStatus __vaDriverInit_1_17(VADriverContextP ctx)
{
    if (env_flag("WLFAKE_FAIL_INIT") || gpu_gone)
        return VA_STATUS_ERROR_OPERATION_FAILED;
    struct fake_driver *d = calloc(1, sizeof(*d));
    if (!d)
        return VA_STATUS_ERROR_ALLOCATION_FAILED;
    d->no_encode = env_flag("WLFAKE_NO_ENCODE");
    ctx->pDriverData = d;
    ctx->version_major = VA_MAJOR_VERSION;
    ctx->version_minor = VA_MINOR_VERSION;
    ctx->max_profiles = N_PROFILES;
    ctx->max_entrypoints = 1;
    ctx->max_attributes = MAX_ATTRS;
    ctx->max_image_formats = 1;
    ctx->max_subpic_formats = 1;
    ctx->max_display_attributes = 1;
    ctx->str_vendor = FAKE_VENDOR;

    /* Every function pointer of the vtable (everything before `reserved`) first gets the stub. */
    struct VADriverVTable *vt = ctx->vtable;
    void (**slot)(void) = (void (**)(void))vt;
    size_t n_slots = offsetof(struct VADriverVTable, reserved) / sizeof(*slot);
    for (size_t i = 0; i < n_slots; i++)
        slot[i] = (void (*)(void))unimplemented;
    vt->vaTerminate = fake_terminate;
    vt->vaQueryConfigProfiles = fake_query_config_profiles;
    vt->vaQueryConfigEntrypoints = fake_query_config_entrypoints;
    vt->vaGetConfigAttributes = fake_get_config_attributes;
    vt->vaCreateConfig = fake_create_config;
    vt->vaDestroyConfig = fake_destroy_config;
    vt->vaQueryConfigAttributes = fake_query_config_attributes;
    vt->vaQueryImageFormats = fake_query_image_formats;
    vt->vaQuerySubpictureFormats = fake_query_subpicture_formats;
    vt->vaQueryDisplayAttributes = fake_query_display_attributes;
    vt->vaCreateSurfaces = fake_create_surfaces;
    vt->vaCreateSurfaces2 = fake_create_surfaces2;
    vt->vaDestroySurfaces = fake_destroy_surfaces;
    vt->vaQuerySurfaceAttributes = fake_query_surface_attributes;
    vt->vaSyncSurface = fake_sync_surface;
    vt->vaQuerySurfaceStatus = fake_query_surface_status;
    vt->vaCreateBuffer = fake_create_buffer;
    vt->vaBufferSetNumElements = fake_buffer_set_num_elements;
    vt->vaMapBuffer = fake_map_buffer;
    vt->vaUnmapBuffer = fake_unmap_buffer;
    vt->vaDestroyBuffer = fake_destroy_buffer;
    vt->vaBufferInfo = fake_buffer_info;
    vt->vaCreateImage = fake_create_image;
    vt->vaDeriveImage = fake_derive_image;
    vt->vaDestroyImage = fake_destroy_image;
    vt->vaGetImage = fake_get_image;
    vt->vaPutImage = fake_put_image;
    vt->vaCreateContext = fake_create_context;
    vt->vaDestroyContext = fake_destroy_context;
    vt->vaBeginPicture = fake_begin_picture;
    vt->vaRenderPicture = fake_render_picture;
    vt->vaEndPicture = fake_end_picture;
    return VA_STATUS_SUCCESS;
}
