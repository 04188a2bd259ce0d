// Device memory figures through libtorch's device-agnostic allocator interface, which tch does
// not expose: free and total memory (the driver's view) and the caching allocator's
// allocated, peak and reserved bytes. No CUDA header is needed, so this builds on CPU-only
// machines; there every call reports failure (no CUDA allocator is registered).
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>

extern "C" int fedsim_cuda_memory(int device, uint64_t* free_bytes, uint64_t* total_bytes,
                                  uint64_t* allocated, uint64_t* peak_allocated, uint64_t* reserved) {
  try {
    auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    auto info = allocator->getMemoryInfo(static_cast<c10::DeviceIndex>(device));
    auto stats = allocator->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *free_bytes = info.first;
    *total_bytes = info.second;
    *allocated = stats.allocated_bytes[all].current;
    *peak_allocated = stats.allocated_bytes[all].peak;
    *reserved = stats.reserved_bytes[all].current;
    return 0;
  } catch (...) {
    return 1;
  }
}

extern "C" int fedsim_cuda_reset_peak(int device) {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 1;
  }
}

// Makes the calling thread launch its CUDA work on a stream of libtorch's pool instead of the
// default stream, so that cohorts on different worker threads overlap on the GPU.
#include <c10/core/impl/VirtualGuardImpl.h>

extern "C" int fedsim_use_pool_stream(int device) {
  try {
    c10::impl::VirtualGuardImpl guard(c10::DeviceType::CUDA);
    const c10::Device cuda(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device));
    guard.exchangeStream(guard.getStreamFromGlobalPool(cuda, /*isHighPriority=*/false));
    return 0;
  } catch (...) {
    return 1;
  }
}

// Waits until the calling thread's current CUDA stream has run all its work: a worker's
// results, or a new model version, may then be read on another thread's stream and the tensors
// they were made from freed.
extern "C" int fedsim_sync_current_stream(int device) {
  try {
    c10::impl::VirtualGuardImpl guard(c10::DeviceType::CUDA);
    const c10::Device cuda(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device));
    guard.synchronizeStream(guard.getStream(cuda));
    return 0;
  } catch (...) {
    return 1;
  }
}
