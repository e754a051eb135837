/*
 * A fake VA-API driver for wl-webrtc's tests (issue 18): a shared object that real libva 2.17 loads through
 * LIBVA_DRIVERS_PATH + LIBVA_DRIVER_NAME=wlfake, speaking the real driver interface (va_backend.h). No machine
 * here has a VA driver or a render node; this is the bottom of the stack only, everything above it (libva,
 * cros-libva, wl-webrtc) is real.
 *
 * This first step answers what a client asks before it encodes: the H.264 profiles, the encode entrypoint,
 * the config attributes (YUV 4:2:0, CBR/CQP, no packed headers), configs, the NV12 image format, the vendor
 * string. Every other entry of the vtable exists (libva refuses a driver with NULL entries) and answers
 * VA_STATUS_ERROR_UNIMPLEMENTED.
 *
 * Test knobs (environment): WLFAKE_FAIL_INIT=1 makes the driver's init fail; WLFAKE_NO_ENCODE=1 offers the H.264
 * profiles for decoding only (VAEntrypointVLD), as a decode-only GPU does.
 */
#include <stdlib.h>
#include <string.h>
#include <va/va.h>
#include <va/va_backend.h>

#define FAKE_VENDOR "wl-webrtc fake VA driver (tests)"
#define MAX_CONFIGS 16
#define MAX_ATTRS 8

struct fake_config {
    int used;
    VAProfile profile;
    VAEntrypoint entrypoint;
    int n_attrs;
    VAConfigAttrib attrs[MAX_ATTRS];
};

struct fake_driver {
    int no_encode;
    struct fake_config configs[MAX_CONFIGS];
};

static const VAProfile PROFILES[] = {
    VAProfileH264ConstrainedBaseline,
    VAProfileH264Main,
    VAProfileH264High,
};
#define N_PROFILES ((int)(sizeof(PROFILES) / sizeof(PROFILES[0])))

static struct fake_driver *drv(VADriverContextP ctx) { return (struct fake_driver *)ctx->pDriverData; }

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

static VAStatus fake_terminate(VADriverContextP ctx)
{
    free(ctx->pDriverData);
    ctx->pDriverData = NULL;
    return VA_STATUS_SUCCESS;
}

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

VAStatus __vaDriverInit_1_17(VADriverContextP ctx);

VAStatus __vaDriverInit_1_17(VADriverContextP ctx)
{
    const char *fail = getenv("WLFAKE_FAIL_INIT");
    if (fail && *fail && strcmp(fail, "0") != 0)
        return VA_STATUS_ERROR_OPERATION_FAILED;
    struct fake_driver *d = calloc(1, sizeof(*d));
    if (!d)
        return VA_STATUS_ERROR_ALLOCATION_FAILED;
    const char *no_encode = getenv("WLFAKE_NO_ENCODE");
    d->no_encode = no_encode && *no_encode && strcmp(no_encode, "0") != 0;
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
    return VA_STATUS_SUCCESS;
}
