// GPU lab extension: power-on checks and device binding for passthrough VMs.

package simulator

import (
	"fmt"
	"strconv"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func gpulabPowerFault(vm *VirtualMachine, msg string) types.BaseMethodFault {
	reason := fmt.Sprintf("Module 'DevicePowerOn' power on failed. VM %s: %s", vm.Name, msg)
	return gpulabFault(&types.GenericVmConfigFault{Reason: reason}, reason)
}

// gpulabPlan picks the host device for each passthrough device of a VM.
func gpulabPlan(vm *VirtualMachine, h *HostSystem) ([]string, types.BaseMethodFault) {
	taken := map[string]bool{}
	var ids []string
	for _, p := range gpulabPassthroughDevices(vm.Config.Hardware.Device) {
		switch b := p.Backing.(type) {
		case *types.VirtualPCIPassthroughDeviceBackingInfo:
			if info := gpulabPassthruInfo(h, b.Id); info == nil || !info.PassthruActive {
				return nil, gpulabPowerFault(vm, fmt.Sprintf("device %s is not passthrough-active on host %s", b.Id, h.Name))
			}
			if other := gpulabDeviceBusy(h, b.Id); other != "" && other != vm.Name {
				return nil, gpulabPowerFault(vm, fmt.Sprintf("device %s is already in use by VM %s", b.Id, other))
			}
			taken[b.Id] = true
			ids = append(ids, b.Id)
		case *types.VirtualPCIPassthroughDynamicBackingInfo:
			id := ""
			for _, d := range gpulabActiveGpus(h) {
				if taken[d.Id] || gpulabDeviceBusy(h, d.Id) != "" {
					continue
				}
				for _, a := range b.AllowedDevice {
					if a.VendorId == int32(d.VendorId) && a.DeviceId == int32(d.DeviceId) {
						id = d.Id
					}
				}
				if id != "" {
					break
				}
			}
			if id == "" {
				return nil, gpulabPowerFault(vm, fmt.Sprintf("no free passthrough-active device on host %s matches the allowed devices", h.Name))
			}
			taken[id] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func gpulabPowerOnCheck(vm *VirtualMachine) types.BaseMethodFault {
	h := gpulabHostOf(vm)
	devices := gpulabPassthroughDevices(vm.Config.Hardware.Device)
	if h == nil || len(devices) == 0 {
		return nil
	}
	if f := gpulabNotConnected(h); f != nil {
		return f
	}
	if h.Runtime.InMaintenanceMode {
		return gpulabFault(&types.InvalidState{}, fmt.Sprintf("host %s of VM %s is in maintenance mode", h.Name, vm.Name))
	}
	locked := vm.Config.MemoryReservationLockedToMax != nil && *vm.Config.MemoryReservationLockedToMax
	reserved := vm.Config.MemoryAllocation != nil && vm.Config.MemoryAllocation.Reservation != nil &&
		*vm.Config.MemoryAllocation.Reservation >= int64(vm.Config.Hardware.MemoryMB)
	if !locked && !reserved {
		return gpulabPowerFault(vm, "Invalid memory setting: memory reservation (sched.mem.min) should be equal to memsize")
	}
	ids, f := gpulabPlan(vm, h)
	if f != nil {
		return f
	}
	need := 0
	for _, id := range ids {
		if d := gpulabPciDevice(h, id); d != nil {
			need += gpulabBarGB(gpulabGpuMemoryGB(d.DeviceId))
		}
	}
	if need > 32 {
		if vm.Config.Firmware != string(types.GuestOsDescriptorFirmwareTypeEfi) {
			return gpulabPowerFault(vm, "large-BAR passthrough devices need EFI firmware")
		}
		if gpulabExtra(vm, "pciPassthru.use64bitMMIO") != "TRUE" {
			return gpulabPowerFault(vm, "pciPassthru.use64bitMMIO must be TRUE for large-BAR devices")
		}
		size, _ := strconv.Atoi(gpulabExtra(vm, "pciPassthru.64bitMMIOSizeGB"))
		if size < need {
			return gpulabPowerFault(vm, fmt.Sprintf("pciPassthru.64bitMMIOSizeGB=%d is smaller than the %d GB the devices' BARs need", size, need))
		}
	}
	return nil
}

// gpulabBarGB is the BAR1 size of a GPU: its memory rounded up to a power of two.
func gpulabBarGB(memGB int) int {
	bar := 1
	for bar < memGB {
		bar *= 2
	}
	if memGB == 0 {
		return 0
	}
	return bar
}

func gpulabBind(vm *VirtualMachine) {
	h := gpulabHostOf(vm)
	if h == nil {
		return
	}
	ids, f := gpulabPlan(vm, h)
	if f != nil {
		return
	}
	i := 0
	for _, p := range gpulabPassthroughDevices(vm.Config.Hardware.Device) {
		if b, ok := p.Backing.(*types.VirtualPCIPassthroughDynamicBackingInfo); ok {
			b.AssignedId = ids[i]
		}
		i++
	}
	for _, id := range ids {
		h.Config.AssignableHardwareBinding = append(h.Config.AssignableHardwareBinding,
			types.HostAssignableHardwareBinding{InstanceId: id, Vm: vm.Self})
	}
}

// QueryConfigTarget adds the passthrough-active NVIDIA devices of the host(s) to the
// original answer: static entries (pciPassthrough) and dynamic ones (dynamicPassthrough).
func (b *EnvironmentBrowser) QueryConfigTarget(ctx *Context, req *types.QueryConfigTarget) soap.HasFault {
	res := b.queryConfigTargetOrig(ctx, req)
	body, ok := res.(*methods.QueryConfigTargetBody)
	if !ok || body.Res == nil {
		return res
	}
	target := body.Res.Returnval
	hosts := b.hosts(ctx)
	if req.Host != nil {
		hosts = []types.ManagedObjectReference{*req.Host}
	}
	seen := map[int16]bool{}
	for _, ref := range hosts {
		h, ok := ctx.Map.Get(ref).(*HostSystem)
		if !ok {
			continue
		}
		for _, d := range gpulabActiveGpus(h) {
			target.PciPassthrough = append(target.PciPassthrough, &types.VirtualMachinePciPassthroughInfo{
				VirtualMachineTargetInfo: types.VirtualMachineTargetInfo{Name: d.DeviceName},
				PciDevice:                d,
				SystemId:                 h.Hardware.SystemInfo.Uuid,
			})
			if !seen[d.DeviceId] {
				seen[d.DeviceId] = true
				target.DynamicPassthrough = append(target.DynamicPassthrough, types.VirtualMachineDynamicPassthroughInfo{
					VirtualMachineTargetInfo: types.VirtualMachineTargetInfo{Name: d.DeviceName},
					VendorName:               d.VendorName,
					DeviceName:               d.DeviceName,
					VendorId:                 int32(d.VendorId),
					DeviceId:                 int32(d.DeviceId),
				})
			}
		}
	}
	return body
}
