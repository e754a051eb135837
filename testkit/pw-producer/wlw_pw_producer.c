/*
 * A PipeWire video producer for wl-webrtc's tests (issue 18): a Video/Source node that allocates its own buffers
 * and offers them as DMA-BUF (LINEAR modifier) or as MemFd, so that the consumer's DMA-BUF negotiation, import
 * and fallback run through real PipeWire. The "DMA-BUFs" are memfds: what a LINEAR dmabuf is to a consumer that
 * maps it (there is no GPU here); the negotiation, the fd passing and the mapping are the real ones.
 *
 *   wlw-pw-producer NAME MODE WIDTH HEIGHT RRGGBB
 *
 * MODE: dmabuf          one format, with modifier LINEAR (mandatory): DMA-BUF or nothing
 *       memfd           one format without a modifier: MemFd buffers
 *       both-unmappable the DMA-BUF format first, the MemFd one second; its DMA-BUF buffers carry an fd that
 *                       cannot be mapped (a pipe), as an exotic GPU buffer would be to a CPU consumer
 * Every frame is the solid colour, BGRx, 30 frames per second. It prints "streaming dmabuf|memfd" on stdout
 * each time a stream format is set and buffers are allocated.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <pipewire/pipewire.h>
#include <spa/param/video/format-utils.h>
#include <spa/pod/builder.h>

#define DRM_FORMAT_MOD_LINEAR 0

enum mode { MODE_DMABUF, MODE_MEMFD, MODE_BOTH_UNMAPPABLE };

struct data {
    struct pw_main_loop *loop;
    struct spa_source *timer;
    struct pw_stream *stream;
    enum mode mode;
    int width, height, stride;
    uint8_t rgb[3];
    int dmabuf; /* the negotiated format has a modifier */
};

static const struct spa_pod *format_param(struct spa_pod_builder *b, const struct data *d, int with_modifier)
{
    struct spa_pod_frame f;
    spa_pod_builder_push_object(b, &f, SPA_TYPE_OBJECT_Format, SPA_PARAM_EnumFormat);
    spa_pod_builder_add(b, SPA_FORMAT_mediaType, SPA_POD_Id(SPA_MEDIA_TYPE_video), SPA_FORMAT_mediaSubtype,
                        SPA_POD_Id(SPA_MEDIA_SUBTYPE_raw), SPA_FORMAT_VIDEO_format, SPA_POD_Id(SPA_VIDEO_FORMAT_BGRx),
                        SPA_FORMAT_VIDEO_size, SPA_POD_Rectangle(&SPA_RECTANGLE(d->width, d->height)),
                        SPA_FORMAT_VIDEO_framerate, SPA_POD_Fraction(&SPA_FRACTION(30, 1)), 0);
    if (with_modifier) {
        spa_pod_builder_prop(b, SPA_FORMAT_VIDEO_modifier, SPA_POD_PROP_FLAG_MANDATORY);
        spa_pod_builder_long(b, DRM_FORMAT_MOD_LINEAR);
    }
    return spa_pod_builder_pop(b, &f);
}

static void on_process(void *userdata)
{
    struct data *d = userdata;
    struct pw_buffer *b = pw_stream_dequeue_buffer(d->stream);
    if (!b)
        return;
    struct spa_data *sd = &b->buffer->datas[0];
    uint8_t *p = sd->data;
    if (p) {
        for (int y = 0; y < d->height; y++)
            for (int x = 0; x < d->width; x++) {
                uint8_t *px = p + (size_t)y * d->stride + (size_t)x * 4;
                px[0] = d->rgb[2], px[1] = d->rgb[1], px[2] = d->rgb[0], px[3] = 0xff;
            }
    }
    sd->chunk->offset = 0;
    sd->chunk->stride = d->stride;
    sd->chunk->size = (uint32_t)(d->stride * d->height);
    pw_stream_queue_buffer(d->stream, b);
}

static void on_timeout(void *userdata, uint64_t expirations)
{
    (void)expirations;
    struct data *d = userdata;
    pw_stream_trigger_process(d->stream);
}

static void on_state_changed(void *userdata, enum pw_stream_state old, enum pw_stream_state state, const char *error)
{
    (void)old;
    struct data *d = userdata;
    if (error)
        fprintf(stderr, "stream error: %s\n", error);
    struct pw_loop *loop = pw_main_loop_get_loop(d->loop);
    struct timespec interval = {0, 33333333}, start = {0, 1};
    if (state == PW_STREAM_STATE_STREAMING)
        pw_loop_update_timer(loop, d->timer, &start, &interval, false);
    else
        pw_loop_update_timer(loop, d->timer, NULL, NULL, false);
}

static void on_param_changed(void *userdata, uint32_t id, const struct spa_pod *param)
{
    struct data *d = userdata;
    if (id != SPA_PARAM_Format || !param)
        return;
    struct spa_video_info_raw info;
    spa_zero(info);
    if (spa_format_video_raw_parse(param, &info) < 0)
        return;
    d->dmabuf = (info.flags & SPA_VIDEO_FLAG_MODIFIER) != 0;
    d->stride = d->width * 4;
    uint8_t buffer[1024];
    struct spa_pod_builder b = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
    const struct spa_pod *params[2];
    int type = d->dmabuf ? SPA_DATA_DmaBuf : SPA_DATA_MemFd;
    params[0] = spa_pod_builder_add_object(
        &b, SPA_TYPE_OBJECT_ParamBuffers, SPA_PARAM_Buffers, SPA_PARAM_BUFFERS_buffers, SPA_POD_CHOICE_RANGE_Int(4, 2, 8),
        SPA_PARAM_BUFFERS_blocks, SPA_POD_Int(1), SPA_PARAM_BUFFERS_size, SPA_POD_Int(d->stride * d->height),
        SPA_PARAM_BUFFERS_stride, SPA_POD_Int(d->stride), SPA_PARAM_BUFFERS_dataType,
        SPA_POD_CHOICE_FLAGS_Int(1 << type));
    params[1] = spa_pod_builder_add_object(&b, SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta, SPA_PARAM_META_type,
                                           SPA_POD_Id(SPA_META_Header), SPA_PARAM_META_size,
                                           SPA_POD_Int(sizeof(struct spa_meta_header)));
    pw_stream_update_params(d->stream, params, 2);
}

static void on_add_buffer(void *userdata, struct pw_buffer *buffer)
{
    struct data *d = userdata;
    struct spa_data *sd = &buffer->buffer->datas[0];
    uint32_t want = d->dmabuf ? SPA_DATA_DmaBuf : SPA_DATA_MemFd;
    if ((sd->type & (1u << want)) == 0) {
        fprintf(stderr, "the consumer does not take %s buffers\n", d->dmabuf ? "DmaBuf" : "MemFd");
        return;
    }
    size_t size = (size_t)d->stride * d->height;
    int fd = memfd_create("wlw-pw-producer", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror("memfd");
        return;
    }
    sd->data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (sd->data == MAP_FAILED) {
        sd->data = NULL;
        close(fd);
        return;
    }
    if (d->dmabuf && d->mode == MODE_BOTH_UNMAPPABLE) {
        /* The consumer gets an fd it cannot map: one end of a pipe. */
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
            return;
        close(pipefd[1]);
        close(fd);
        fd = pipefd[0];
    }
    sd->type = want;
    sd->flags = SPA_DATA_FLAG_READWRITE;
    sd->fd = fd;
    sd->mapoffset = 0;
    sd->maxsize = (uint32_t)size;
    printf("streaming %s\n", d->dmabuf ? "dmabuf" : "memfd");
    fflush(stdout);
}

static void on_remove_buffer(void *userdata, struct pw_buffer *buffer)
{
    (void)userdata;
    struct spa_data *sd = &buffer->buffer->datas[0];
    if (sd->data)
        munmap(sd->data, sd->maxsize);
    if (sd->fd >= 0)
        close((int)sd->fd);
    sd->data = NULL;
    sd->fd = -1;
}

static const struct pw_stream_events stream_events = {
    PW_VERSION_STREAM_EVENTS,
    .process = on_process,
    .state_changed = on_state_changed,
    .param_changed = on_param_changed,
    .add_buffer = on_add_buffer,
    .remove_buffer = on_remove_buffer,
};

static void on_signal(void *userdata, int signal_number)
{
    (void)signal_number;
    struct data *d = userdata;
    pw_main_loop_quit(d->loop);
}

int main(int argc, char *argv[])
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s NAME dmabuf|memfd|both-unmappable WIDTH HEIGHT RRGGBB\n", argv[0]);
        return 2;
    }
    struct data d;
    memset(&d, 0, sizeof(d));
    if (!strcmp(argv[2], "dmabuf"))
        d.mode = MODE_DMABUF;
    else if (!strcmp(argv[2], "memfd"))
        d.mode = MODE_MEMFD;
    else if (!strcmp(argv[2], "both-unmappable"))
        d.mode = MODE_BOTH_UNMAPPABLE;
    else {
        fprintf(stderr, "unknown mode %s\n", argv[2]);
        return 2;
    }
    d.width = atoi(argv[3]);
    d.height = atoi(argv[4]);
    unsigned long rgb = strtoul(argv[5], NULL, 16);
    d.rgb[0] = (uint8_t)(rgb >> 16), d.rgb[1] = (uint8_t)(rgb >> 8), d.rgb[2] = (uint8_t)rgb;
    if (d.width <= 0 || d.height <= 0) {
        fprintf(stderr, "bad size\n");
        return 2;
    }
    pw_init(&argc, &argv);
    d.loop = pw_main_loop_new(NULL);
    struct pw_loop *loop = pw_main_loop_get_loop(d.loop);
    pw_loop_add_signal(loop, SIGINT, on_signal, &d);
    pw_loop_add_signal(loop, SIGTERM, on_signal, &d);
    d.timer = pw_loop_add_timer(loop, on_timeout, &d);
    d.stream = pw_stream_new_simple(loop, argv[1],
                                    pw_properties_new(PW_KEY_MEDIA_CLASS, "Video/Source", PW_KEY_MEDIA_TYPE, "Video",
                                                      PW_KEY_NODE_NAME, argv[1], NULL),
                                    &stream_events, &d);
    uint8_t buffer[2048];
    struct spa_pod_builder b = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
    const struct spa_pod *params[2];
    uint32_t n = 0;
    if (d.mode != MODE_MEMFD)
        params[n++] = format_param(&b, &d, 1);
    if (d.mode != MODE_DMABUF)
        params[n++] = format_param(&b, &d, 0);
    if (pw_stream_connect(d.stream, PW_DIRECTION_OUTPUT, PW_ID_ANY,
                          PW_STREAM_FLAG_DRIVER | PW_STREAM_FLAG_ALLOC_BUFFERS, params, n) < 0) {
        fprintf(stderr, "cannot connect the stream\n");
        return 1;
    }
    pw_main_loop_run(d.loop);
    pw_stream_destroy(d.stream);
    pw_main_loop_destroy(d.loop);
    pw_deinit();
    return 0;
}
