//! The Vulkan objects behind [`super::VulkanConverter`]: instance, device, compute pipeline, command buffer,
//! fence, timestamp queries ([`Gpu`]) and the buffers sized for one frame layout ([`Buf`]).
//!
//! Every `unsafe` block here is a Vulkan call; the invariants are always the same few: handles passed in were
//! created from this `Gpu`'s device and are not yet destroyed, create-info structs outlive the call, and no
//! object is destroyed while the GPU may still use it (`Drop` waits for the device to be idle first).

#![allow(unsafe_code)] // FFI edge: every unsafe block carries a SAFETY note

use std::ffi::{CStr, c_char};

use ash::vk;

use super::VulkanError;
use super::plan::PushConstants;

/// The SPIR-V of `shaders/rgb_to_nv12.comp`, compiled by build.rs with naga.
static SHADER_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rgb_to_nv12.spv"));

/// How long one submission may take before the frame is given up (lavapipe at 4K in a debug build: ~1 s).
pub const SUBMIT_TIMEOUT_NS: u64 = 10_000_000_000;

/// Timestamps written per submission: start, after upload, after dispatch, after readback.
pub const TIMESTAMPS: u32 = 4;

/// Device kinds, best first, as [`DeviceInfo::kind_rank`] orders them.
fn kind_rank(t: vk::PhysicalDeviceType) -> u32 {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => 4,
        vk::PhysicalDeviceType::INTEGRATED_GPU => 3,
        vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
        vk::PhysicalDeviceType::CPU => 1,
        _ => 0,
    }
}

/// What the converter needs to know about a physical device to choose one (pure data, so choosing is tested
/// without a device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub device_type: vk::PhysicalDeviceType,
    /// A queue family with COMPUTE, if any.
    pub compute_family: Option<u32>,
    /// Valid bits of that family's timestamps (0: no timestamp queries).
    pub timestamp_bits: u32,
    /// VK_EXT_external_memory_dma_buf and VK_KHR_external_memory_fd are both offered.
    pub dmabuf_import: bool,
    /// VK_EXT_image_drm_format_modifier is offered.
    pub drm_modifiers: bool,
}

impl DeviceInfo {
    /// A real GPU (what `--convert auto` requires): discrete or integrated.
    pub fn is_hardware_gpu(&self) -> bool {
        matches!(self.device_type, vk::PhysicalDeviceType::DISCRETE_GPU | vk::PhysicalDeviceType::INTEGRATED_GPU)
    }

    /// Short kind name for logs and the bench.
    pub fn kind_name(&self) -> &'static str {
        match self.device_type {
            vk::PhysicalDeviceType::DISCRETE_GPU => "discrete GPU",
            vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated GPU",
            vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual GPU",
            vk::PhysicalDeviceType::CPU => "CPU (software)",
            _ => "other",
        }
    }
}

/// Index of the device to use: the best kind (discrete > integrated > virtual > CPU) with a compute queue;
/// with `hardware_only`, CPU/software devices such as lavapipe are never chosen.
pub fn choose_device(devices: &[DeviceInfo], hardware_only: bool) -> Option<usize> {
    devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.compute_family.is_some() && (!hardware_only || d.is_hardware_gpu()))
        .max_by_key(|(i, d)| (kind_rank(d.device_type), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// A buffer with its own memory, persistently mapped when host-visible.
#[derive(Debug)]
pub struct Buf {
    pub buffer: vk::Buffer,
    pub memory: vk::DeviceMemory,
    pub size: u64,
    /// Host pointer to the whole buffer (null when not host-visible).
    pub ptr: *mut u8,
    /// The memory type is DEVICE_LOCAL.
    pub device_local: bool,
}

// SAFETY: the mapping is owned by this buffer; the converter that owns the buffer is the only one that copies
// through the pointer (from `&mut self` methods), so moving it to another thread moves exclusive access with it.
unsafe impl Send for Buf {}

/// Memory properties a buffer wants: `required` must all be present, `preferred` are taken when a type has them.
#[derive(Debug, Clone, Copy)]
pub struct MemoryWish {
    pub required: vk::MemoryPropertyFlags,
    pub preferred: vk::MemoryPropertyFlags,
    /// Types with any of these flags are avoided when another type fits.
    pub avoided: vk::MemoryPropertyFlags,
}

/// Index of the memory type for `wish` among those allowed by `type_bits`.
pub(crate) fn pick_memory_type(
    props: &vk::PhysicalDeviceMemoryProperties,
    type_bits: u32,
    wish: MemoryWish,
) -> Option<u32> {
    let count = (props.memory_type_count as usize).min(props.memory_types.len());
    let candidates = || {
        props.memory_types[..count]
            .iter()
            .enumerate()
            .filter(move |(i, t)| type_bits & (1 << i) != 0 && t.property_flags.contains(wish.required))
    };
    let score =
        |f: vk::MemoryPropertyFlags| u32::from(f.contains(wish.preferred)) * 2 + u32::from(!f.intersects(wish.avoided));
    candidates().max_by_key(|(i, t)| (score(t.property_flags), std::cmp::Reverse(*i))).map(|(i, _)| i as u32)
}

/// Instance, device, queue and the compute pipeline, plus the per-submission objects (one command buffer, one
/// fence, one timestamp query pool). Created once; frame-sized buffers live in [`super::VulkanConverter`].
pub struct Gpu {
    // Field order is irrelevant: `Drop` destroys explicitly, children first.
    _entry: ash::Entry,
    instance: ash::Instance,
    pub device: ash::Device,
    pub info: DeviceInfo,
    pub memory_props: vk::PhysicalDeviceMemoryProperties,
    pub queue: vk::Queue,
    pub timestamp_period_ns: f64,
    pub set_layout: vk::DescriptorSetLayout,
    pub pipeline_layout: vk::PipelineLayout,
    pub pipeline: vk::Pipeline,
    pub descriptor_pool: vk::DescriptorPool,
    pub descriptor_set: vk::DescriptorSet,
    pub command_pool: vk::CommandPool,
    pub cmd: vk::CommandBuffer,
    pub fence: vk::Fence,
    /// `None` when the queue has no timestamps.
    pub queries: Option<vk::QueryPool>,
    /// Loaded when the device offers dmabuf import.
    pub external_fd: Option<ash::khr::external_memory_fd::Device>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("device", &self.info.name).field("kind", &self.info.kind_name()).finish()
    }
}

fn cstr_name(raw: &[c_char]) -> String {
    // Vulkan strings are NUL-terminated within their fixed arrays; never read past the array.
    let bytes: Vec<u8> = raw.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Load the Vulkan loader (dlopen, so a missing libvulkan is an error here, not a link failure) and create an
/// instance.
fn load_instance() -> Result<(ash::Entry, ash::Instance), VulkanError> {
    // SAFETY: dlopen of the system Vulkan loader; ash resolves vkGetInstanceProcAddr and checks it exists. The
    // library stays loaded for as long as `Entry` lives (it is kept in `Gpu`, after every object made from it).
    let entry = unsafe { ash::Entry::load() }.map_err(|e| VulkanError::Loader(e.to_string()))?;
    let app = vk::ApplicationInfo::default()
        .application_name(c"wl-webrtc")
        .application_version(1)
        .engine_name(c"wl-webrtc")
        .api_version(vk::API_VERSION_1_1);
    let info = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: `info` and `app` outlive the call; no extensions or layers are requested.
    let instance = unsafe { entry.create_instance(&info, None) }.map_err(|e| match e {
        // The loader found no driver (ICD) at all.
        vk::Result::ERROR_INCOMPATIBLE_DRIVER => VulkanError::NoDevice { found: String::new(), hardware_only: false },
        e => VulkanError::Vk { call: "vkCreateInstance", result: e },
    })?;
    Ok((entry, instance))
}

fn describe(instance: &ash::Instance, pd: vk::PhysicalDevice) -> Result<DeviceInfo, VulkanError> {
    // SAFETY: `pd` was returned by vkEnumeratePhysicalDevices of this instance.
    let props = unsafe { instance.get_physical_device_properties(pd) };
    // SAFETY: as above.
    let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
    // SAFETY: as above; no layer name.
    let exts = unsafe { instance.enumerate_device_extension_properties(pd) }
        .map_err(VulkanError::vk("vkEnumerateDeviceExtensionProperties"))?;
    let has = |name: &CStr| exts.iter().any(|e| e.extension_name_as_c_str().is_ok_and(|n| n == name));
    // Prefer a compute family without graphics (async compute) only if it also has timestamps; else the first.
    let compute = families.iter().enumerate().filter(|(_, f)| f.queue_flags.contains(vk::QueueFlags::COMPUTE));
    let chosen = compute.clone().find(|(_, f)| f.timestamp_valid_bits > 0).or_else(|| compute.clone().next());
    Ok(DeviceInfo {
        name: cstr_name(&props.device_name),
        device_type: props.device_type,
        compute_family: chosen.map(|(i, _)| i as u32),
        timestamp_bits: chosen.map_or(0, |(_, f)| f.timestamp_valid_bits),
        dmabuf_import: has(ash::khr::external_memory_fd::NAME) && has(ash::ext::external_memory_dma_buf::NAME),
        drm_modifiers: has(ash::ext::image_drm_format_modifier::NAME),
    })
}

/// Every Vulkan device the loader reports (empty when there is none); errors when the loader is missing.
pub fn list_devices() -> Result<Vec<DeviceInfo>, VulkanError> {
    let (_entry, instance) = load_instance()?;
    let result = (|| {
        // SAFETY: valid instance.
        let pds =
            unsafe { instance.enumerate_physical_devices() }.map_err(VulkanError::vk("vkEnumeratePhysicalDevices"))?;
        pds.into_iter().map(|pd| describe(&instance, pd)).collect()
    })();
    // SAFETY: nothing created from this instance is alive (physical devices are not destroyed).
    unsafe { instance.destroy_instance(None) };
    result
}

/// The chosen physical device, opened.
struct Opened {
    device: ash::Device,
    info: DeviceInfo,
    family: u32,
    memory_props: vk::PhysicalDeviceMemoryProperties,
    timestamp_period_ns: f64,
}

fn open_device(instance: &ash::Instance, hardware_only: bool) -> Result<Opened, VulkanError> {
    // SAFETY: valid instance.
    let pds =
        unsafe { instance.enumerate_physical_devices() }.map_err(VulkanError::vk("vkEnumeratePhysicalDevices"))?;
    let infos: Vec<DeviceInfo> = pds.iter().map(|&pd| describe(instance, pd)).collect::<Result<_, _>>()?;
    let idx = choose_device(&infos, hardware_only).ok_or_else(|| VulkanError::NoDevice {
        found: infos.iter().map(|d| format!("{} ({})", d.name, d.kind_name())).collect::<Vec<_>>().join(", "),
        hardware_only,
    })?;
    let (pd, info) = (pds[idx], infos[idx].clone());
    let family = info.compute_family.ok_or(VulkanError::Internal("chosen device has no compute queue"))?;
    // SAFETY: valid physical device of this instance.
    let props = unsafe { instance.get_physical_device_properties(pd) };
    // SAFETY: as above.
    let memory_props = unsafe { instance.get_physical_device_memory_properties(pd) };

    let priorities = [1.0f32];
    let queue_info = [vk::DeviceQueueCreateInfo::default().queue_family_index(family).queue_priorities(&priorities)];
    let mut extensions: Vec<*const c_char> = Vec::new();
    if info.dmabuf_import {
        extensions.push(ash::khr::external_memory_fd::NAME.as_ptr());
        extensions.push(ash::ext::external_memory_dma_buf::NAME.as_ptr());
        if info.drm_modifiers {
            extensions.push(ash::ext::image_drm_format_modifier::NAME.as_ptr());
        }
    }
    let device_info =
        vk::DeviceCreateInfo::default().queue_create_infos(&queue_info).enabled_extension_names(&extensions);
    // SAFETY: the create info and the arrays it points to outlive the call; every extension was checked to be
    // offered by this device (image_drm_format_modifier's dependencies are core in the 1.1+ drivers offering it).
    let device =
        unsafe { instance.create_device(pd, &device_info, None) }.map_err(VulkanError::vk("vkCreateDevice"))?;
    Ok(Opened { device, info, family, memory_props, timestamp_period_ns: f64::from(props.limits.timestamp_period) })
}

impl Gpu {
    /// Open the best device (see [`choose_device`]) and build the pipeline.
    pub fn new(hardware_only: bool) -> Result<Gpu, VulkanError> {
        let (entry, instance) = load_instance()?;
        let opened = match open_device(&instance, hardware_only) {
            Ok(o) => o,
            Err(e) => {
                // SAFETY: no device was created; nothing else was made from this instance.
                unsafe { instance.destroy_instance(None) };
                return Err(e);
            }
        };
        let Opened { device, info, family, memory_props, timestamp_period_ns } = opened;
        // SAFETY: family/index 0 were requested when the device was created.
        let queue = unsafe { device.get_device_queue(family, 0) };
        let external_fd = info.dmabuf_import.then(|| ash::khr::external_memory_fd::Device::new(&instance, &device));
        let mut gpu = Gpu {
            _entry: entry,
            instance,
            device,
            info,
            memory_props,
            queue,
            timestamp_period_ns,
            set_layout: vk::DescriptorSetLayout::null(),
            pipeline_layout: vk::PipelineLayout::null(),
            pipeline: vk::Pipeline::null(),
            descriptor_pool: vk::DescriptorPool::null(),
            descriptor_set: vk::DescriptorSet::null(),
            command_pool: vk::CommandPool::null(),
            cmd: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
            queries: None,
            external_fd,
        };
        // On failure `gpu` is dropped: Drop destroys what `build` created (null handles are ignored), then the
        // device and the instance.
        gpu.build(family)?;
        Ok(gpu)
    }

    fn build(&mut self, family: u32) -> Result<(), VulkanError> {
        let d = &self.device;
        let bindings = [0, 1].map(|b| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(b)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        });
        let layout_info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings);
        // SAFETY: valid device; info outlives the call.
        self.set_layout = unsafe { d.create_descriptor_set_layout(&layout_info, None) }
            .map_err(VulkanError::vk("vkCreateDescriptorSetLayout"))?;
        let ranges = [vk::PushConstantRange::default()
            .stage_flags(vk::ShaderStageFlags::COMPUTE)
            .offset(0)
            .size(PushConstants::SIZE as u32)];
        let set_layouts = [self.set_layout];
        let pl_info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts).push_constant_ranges(&ranges);
        // SAFETY: as above; the set layout is alive.
        self.pipeline_layout =
            unsafe { d.create_pipeline_layout(&pl_info, None) }.map_err(VulkanError::vk("vkCreatePipelineLayout"))?;

        let words = ash::util::read_spv(&mut std::io::Cursor::new(SHADER_SPV))
            .map_err(|_| VulkanError::Internal("embedded SPIR-V is malformed"))?;
        let module_info = vk::ShaderModuleCreateInfo::default().code(&words);
        // SAFETY: `words` is the SPIR-V naga produced and validated at build time.
        let module =
            unsafe { d.create_shader_module(&module_info, None) }.map_err(VulkanError::vk("vkCreateShaderModule"))?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main");
        let pipe_info = [vk::ComputePipelineCreateInfo::default().stage(stage).layout(self.pipeline_layout)];
        // SAFETY: module and layout are alive; the info array outlives the call.
        let pipelines = unsafe { d.create_compute_pipelines(vk::PipelineCache::null(), &pipe_info, None) };
        // SAFETY: a shader module may be destroyed once pipelines using it are created.
        unsafe { d.destroy_shader_module(module, None) };
        self.pipeline = pipelines
            .map_err(|(_, e)| VulkanError::Vk { call: "vkCreateComputePipelines", result: e })?
            .into_iter()
            .next()
            .ok_or(VulkanError::Internal("no pipeline returned"))?;

        let pool_sizes = [vk::DescriptorPoolSize::default().ty(vk::DescriptorType::STORAGE_BUFFER).descriptor_count(2)];
        let pool_info = vk::DescriptorPoolCreateInfo::default().max_sets(1).pool_sizes(&pool_sizes);
        // SAFETY: valid device; info outlives the call.
        self.descriptor_pool =
            unsafe { d.create_descriptor_pool(&pool_info, None) }.map_err(VulkanError::vk("vkCreateDescriptorPool"))?;
        let alloc =
            vk::DescriptorSetAllocateInfo::default().descriptor_pool(self.descriptor_pool).set_layouts(&set_layouts);
        // SAFETY: pool and layout are alive; the pool has room for exactly this set.
        self.descriptor_set = unsafe { d.allocate_descriptor_sets(&alloc) }
            .map_err(VulkanError::vk("vkAllocateDescriptorSets"))?
            .into_iter()
            .next()
            .ok_or(VulkanError::Internal("no descriptor set returned"))?;

        let cp_info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: valid device; the family exists.
        self.command_pool =
            unsafe { d.create_command_pool(&cp_info, None) }.map_err(VulkanError::vk("vkCreateCommandPool"))?;
        let cb_info = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.command_pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is alive.
        self.cmd = unsafe { d.allocate_command_buffers(&cb_info) }
            .map_err(VulkanError::vk("vkAllocateCommandBuffers"))?
            .into_iter()
            .next()
            .ok_or(VulkanError::Internal("no command buffer returned"))?;
        // SAFETY: valid device.
        self.fence = unsafe { d.create_fence(&vk::FenceCreateInfo::default(), None) }
            .map_err(VulkanError::vk("vkCreateFence"))?;
        if self.info.timestamp_bits > 0 {
            let q_info =
                vk::QueryPoolCreateInfo::default().query_type(vk::QueryType::TIMESTAMP).query_count(TIMESTAMPS);
            // SAFETY: valid device; the queue family supports timestamps.
            self.queries =
                Some(unsafe { d.create_query_pool(&q_info, None) }.map_err(VulkanError::vk("vkCreateQueryPool"))?);
        }
        Ok(())
    }

    /// A buffer of `size` bytes with `usage`, in memory chosen by `wish`; mapped when host-visible.
    pub fn create_buffer(&self, size: u64, usage: vk::BufferUsageFlags, wish: MemoryWish) -> Result<Buf, VulkanError> {
        let d = &self.device;
        let info = vk::BufferCreateInfo::default().size(size).usage(usage).sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device; info outlives the call.
        let buffer = unsafe { d.create_buffer(&info, None) }.map_err(VulkanError::vk("vkCreateBuffer"))?;
        let mut buf =
            Buf { buffer, memory: vk::DeviceMemory::null(), size, ptr: std::ptr::null_mut(), device_local: false };
        let result = (|| {
            // SAFETY: the buffer is alive.
            let req = unsafe { d.get_buffer_memory_requirements(buffer) };
            let type_index = pick_memory_type(&self.memory_props, req.memory_type_bits, wish)
                .ok_or(VulkanError::NoMemoryType { size })?;
            let flags = self.memory_props.memory_types[type_index as usize].property_flags;
            buf.device_local = flags.contains(vk::MemoryPropertyFlags::DEVICE_LOCAL);
            let alloc = vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(type_index);
            // SAFETY: valid device; the type index comes from this device's memory properties.
            buf.memory = unsafe { d.allocate_memory(&alloc, None) }.map_err(VulkanError::vk("vkAllocateMemory"))?;
            // SAFETY: fresh memory of a type the buffer allows, offset 0, size from its requirements.
            unsafe { d.bind_buffer_memory(buffer, buf.memory, 0) }.map_err(VulkanError::vk("vkBindBufferMemory"))?;
            if flags.contains(vk::MemoryPropertyFlags::HOST_VISIBLE) {
                // SAFETY: host-visible memory, mapped once for its whole lifetime; unmapped by `free` via vkFreeMemory.
                let p = unsafe { d.map_memory(buf.memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }
                    .map_err(VulkanError::vk("vkMapMemory"))?;
                buf.ptr = p.cast::<u8>();
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(buf),
            Err(e) => {
                self.free(&mut buf);
                Err(e)
            }
        }
    }

    /// Destroy a buffer and free its memory (idempotent). The GPU must be done with it.
    pub fn free(&self, buf: &mut Buf) {
        // SAFETY: the handles were created from this device (or are null, which Vulkan ignores), and callers
        // only free buffers no pending submission uses (they wait on the fence first).
        unsafe {
            self.device.destroy_buffer(buf.buffer, None);
            self.device.free_memory(buf.memory, None);
        }
        buf.buffer = vk::Buffer::null();
        buf.memory = vk::DeviceMemory::null();
        buf.ptr = std::ptr::null_mut();
    }

    /// Whether some memory type is DEVICE_LOCAL, HOST_VISIBLE and HOST_COHERENT (BAR, resizable BAR, unified
    /// memory, or a software device).
    pub fn has_host_visible_device_memory(&self) -> bool {
        use vk::MemoryPropertyFlags as M;
        let want = M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT;
        let count = (self.memory_props.memory_type_count as usize).min(self.memory_props.memory_types.len());
        self.memory_props.memory_types[..count].iter().any(|t| t.property_flags.contains(want))
    }

    /// Wait for the last submission (if any) to finish.
    pub fn wait_idle(&self) {
        // SAFETY: valid device. A failure (device lost) leaves nothing to wait for.
        let _ = unsafe { self.device.device_wait_idle() };
    }

    fn destroy_children(&mut self) {
        let d = &self.device;
        // SAFETY: every handle below was created from `d` (null handles are ignored by Vulkan) and the device is
        // idle (callers wait first), so nothing is in use. Children before parents: the command buffer goes with
        // its pool, the descriptor set with its pool.
        unsafe {
            if let Some(q) = self.queries.take() {
                d.destroy_query_pool(q, None);
            }
            d.destroy_fence(self.fence, None);
            d.destroy_command_pool(self.command_pool, None);
            d.destroy_descriptor_pool(self.descriptor_pool, None);
            d.destroy_pipeline(self.pipeline, None);
            d.destroy_pipeline_layout(self.pipeline_layout, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
        self.fence = vk::Fence::null();
        self.command_pool = vk::CommandPool::null();
        self.descriptor_pool = vk::DescriptorPool::null();
        self.pipeline = vk::Pipeline::null();
        self.pipeline_layout = vk::PipelineLayout::null();
        self.set_layout = vk::DescriptorSetLayout::null();
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        self.wait_idle();
        self.destroy_children();
        // SAFETY: every child of the device and instance is destroyed (buffers are freed by the converter's Drop,
        // which runs before this field is dropped); device before instance.
        unsafe {
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, t: vk::PhysicalDeviceType, compute: bool) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            device_type: t,
            compute_family: compute.then_some(0),
            timestamp_bits: 64,
            dmabuf_import: false,
            drm_modifiers: false,
        }
    }

    #[test]
    fn device_choice_prefers_discrete_and_auto_refuses_software() {
        let lavapipe = dev("llvmpipe", vk::PhysicalDeviceType::CPU, true);
        let igpu = dev("igpu", vk::PhysicalDeviceType::INTEGRATED_GPU, true);
        let dgpu = dev("dgpu", vk::PhysicalDeviceType::DISCRETE_GPU, true);
        let broken = dev("no compute", vk::PhysicalDeviceType::DISCRETE_GPU, false);
        assert_eq!(choose_device(&[lavapipe.clone(), igpu.clone(), dgpu.clone()], true), Some(2));
        assert_eq!(choose_device(&[igpu.clone(), lavapipe.clone()], true), Some(0));
        assert_eq!(choose_device(std::slice::from_ref(&lavapipe), true), None);
        assert_eq!(choose_device(std::slice::from_ref(&lavapipe), false), Some(0));
        assert_eq!(choose_device(&[broken.clone(), lavapipe], false), Some(1));
        assert_eq!(choose_device(&[broken], false), None);
        assert_eq!(choose_device(&[dgpu.clone(), dgpu], true), Some(0), "first of equals");
    }

    #[test]
    fn memory_type_choice() {
        let mut props = vk::PhysicalDeviceMemoryProperties { memory_type_count: 3, ..Default::default() };
        use vk::MemoryPropertyFlags as M;
        props.memory_types[0].property_flags = M::DEVICE_LOCAL;
        props.memory_types[1].property_flags = M::HOST_VISIBLE | M::HOST_COHERENT;
        props.memory_types[2].property_flags = M::HOST_VISIBLE | M::HOST_COHERENT | M::HOST_CACHED;
        let host =
            MemoryWish { required: M::HOST_VISIBLE | M::HOST_COHERENT, preferred: M::HOST_CACHED, avoided: M::empty() };
        assert_eq!(pick_memory_type(&props, 0b111, host), Some(2));
        assert_eq!(pick_memory_type(&props, 0b011, host), Some(1));
        assert_eq!(pick_memory_type(&props, 0b001, host), None);
        let local = MemoryWish { required: M::empty(), preferred: M::DEVICE_LOCAL, avoided: M::HOST_VISIBLE };
        assert_eq!(pick_memory_type(&props, 0b111, local), Some(0));
        let upload =
            MemoryWish { required: M::HOST_VISIBLE | M::HOST_COHERENT, preferred: M::empty(), avoided: M::HOST_CACHED };
        assert_eq!(pick_memory_type(&props, 0b111, upload), Some(1));
    }
}
