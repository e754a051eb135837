/*
 * LD_PRELOAD shim for the fake VA driver's tests: libva's vaGetDisplayDRM(fd) accepts only an fd that libdrm's
 * drmGetNodeTypeFromFd() calls a DRM node, and these machines have none. With this preloaded, any fd (a test
 * opens /dev/null) is a render node; nothing else of libdrm changes.
 */
#define DRM_NODE_RENDER 2

int drmGetNodeTypeFromFd(int fd);

int drmGetNodeTypeFromFd(int fd)
{
    return fd >= 0 ? DRM_NODE_RENDER : -1;
}
