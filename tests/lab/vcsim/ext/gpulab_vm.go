// GPU lab extension: passthrough device validation, power-on checks, bindings,
// extraConfig replace semantics and QueryConfigTarget passthrough lists.

package simulator

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const gpulabMaxPassthrough = 16

func gpulabHostOf(vm *VirtualMachine) *HostSystem {
	if vm.Runtime.Host == nil {
		return nil
	}
	h, _ := Map.Get(*vm.Runtime.Host).(*HostSystem)
	return h
}

func gpulabPassthroughDevices(devices []types.BaseVirtualDevice) []*types.VirtualPCIPassthrough {
	var out []*types.VirtualPCIPassthrough
	for _, d := range devices {
		if p, ok := d.(*types.VirtualPCIPassthrough); ok {
			out = append(out, p)
		}
	}
	return out
}

func gpulabHwVersion(vm *VirtualMachine) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(vm.Config.Version, "vmx-"))
	return n
}

// gpulabValidateReconfig checks passthrough devices in a ReconfigVM spec.
func gpulabValidateReconfig(vm *VirtualMachine, spec *types.VirtualMachineConfigSpec) types.BaseMethodFault {
	count := len(gpulabPassthroughDevices(vm.Config.Hardware.Device))
	var added []*types.VirtualPCIPassthrough
	for _, c := range spec.DeviceChange {
		dc := c.GetVirtualDeviceConfigSpec()
		p, ok := dc.Device.(*types.VirtualPCIPassthrough)
		if !ok {
			continue
		}
		switch dc.Operation {
		case types.VirtualDeviceConfigSpecOperationAdd:
			count++
			added = append(added, p)
		case types.VirtualDeviceConfigSpecOperationRemove:
			count--
		}
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
			return gpulabFault(&types.InvalidPowerState{
				RequestedState: types.VirtualMachinePowerStatePoweredOff,
				ExistingState:  vm.Runtime.PowerState,
			}, fmt.Sprintf("VM %s: PCI passthrough devices can only be changed while powered off", vm.Name))
		}
	}
	if count > gpulabMaxPassthrough {
		return gpulabFault(&types.TooManyDevices{}, fmt.Sprintf(
			"VM %s: %d PCI passthrough devices requested, at most %d allowed", vm.Name, count, gpulabMaxPassthrough))
	}
	h := gpulabHostOf(vm)
	for _, p := range added {
		switch b := p.Backing.(type) {
		case *types.VirtualPCIPassthroughDeviceBackingInfo:
			if f := gpulabValidateStatic(vm, h, b); f != nil {
				return f
			}
		case *types.VirtualPCIPassthroughDynamicBackingInfo:
			if v := gpulabHwVersion(vm); v < 17 {
				return gpulabFault(&types.DeviceUnsupportedForVmVersion{
					CurrentVersion: vm.Config.Version, ExpectedVersion: "vmx-17",
				}, fmt.Sprintf("VM %s: Dynamic DirectPath I/O needs hardware version 17 or later, VM has %s",
					vm.Name, vm.Config.Version))
			}
			if len(b.AllowedDevice) == 0 {
				return gpulabFault(&types.InvalidDeviceBacking{},
					fmt.Sprintf("VM %s: dynamic passthrough backing without allowedDevice", vm.Name))
			}
		default:
			return gpulabFault(&types.InvalidDeviceBacking{},
				fmt.Sprintf("VM %s: unsupported passthrough backing %T", vm.Name, p.Backing))
		}
	}
	return nil
}

func gpulabValidateStatic(vm *VirtualMachine, h *HostSystem, b *types.VirtualPCIPassthroughDeviceBackingInfo) types.BaseMethodFault {
	bad := func(msg string) types.BaseMethodFault {
		return gpulabFault(&types.InvalidDeviceBacking{}, fmt.Sprintf("VM %s: device %s: %s", vm.Name, b.Id, msg))
	}
	if h == nil {
		return bad("VM has no host")
	}
	d := gpulabPciDevice(h, b.Id)
	if d == nil {
		return bad("no such PCI device on host " + h.Name)
	}
	if info := gpulabPassthruInfo(h, b.Id); info == nil || !info.PassthruActive {
		return bad("passthrough is not active on host " + h.Name)
	}
	// API reference: deviceId is HostPciDevice.deviceId "converted as is to a string".
	if b.DeviceId != strconv.Itoa(int(d.DeviceId)) || b.VendorId != d.VendorId {
		return bad(fmt.Sprintf("deviceId/vendorId %q/%d do not match the host device %d/%d",
			b.DeviceId, b.VendorId, d.DeviceId, d.VendorId))
	}
	if b.SystemId != h.Hardware.SystemInfo.Uuid {
		return bad(fmt.Sprintf("systemId %q does not match host %s", b.SystemId, h.Name))
	}
	return nil
}

// ReconfigVMTask validates passthrough devices, then runs the original.
func (vm *VirtualMachine) ReconfigVMTask(ctx *Context, req *types.ReconfigVM_Task) soap.HasFault {
	if f := gpulabValidateReconfig(vm, &req.Spec); f != nil {
		task := CreateTask(vm, "reconfigVm", func(*Task) (types.AnyType, types.BaseMethodFault) { return nil, f })
		return &methods.ReconfigVM_TaskBody{Res: &types.ReconfigVM_TaskResponse{Returnval: task.Run()}}
	}
	return vm.reconfigVMTaskOrig(ctx, req)
}

// applyExtraConfig replaces an existing key (an empty value removes it), as vSphere does.
func (vm *VirtualMachine) applyExtraConfig(spec *types.VirtualMachineConfigSpec) {
	var rest []types.BaseOptionValue
	for _, c := range spec.ExtraConfig {
		val := c.GetOptionValue()
		if strings.HasPrefix(extraConfigKey(val.Key), "SET.") {
			rest = append(rest, c)
			continue
		}
		found := -1
		for i, cur := range vm.Config.ExtraConfig {
			if cur.GetOptionValue().Key == val.Key {
				found = i
			}
		}
		empty := val.Value == nil || val.Value == ""
		switch {
		case found >= 0 && empty:
			vm.Config.ExtraConfig = append(vm.Config.ExtraConfig[:found], vm.Config.ExtraConfig[found+1:]...)
		case found >= 0:
			vm.Config.ExtraConfig[found] = c
		case !empty:
			vm.Config.ExtraConfig = append(vm.Config.ExtraConfig, c)
		}
	}
	spec.ExtraConfig = rest
	vm.applyExtraConfigOrig(spec)
}

func gpulabExtra(vm *VirtualMachine, key string) string {
	for _, c := range vm.Config.ExtraConfig {
		if v := c.GetOptionValue(); strings.EqualFold(v.Key, key) {
			return fmt.Sprint(v.Value)
		}
	}
	return ""
}

func gpulabUnbind(vm *VirtualMachine) {
	h := gpulabHostOf(vm)
	if h == nil {
		return
	}
	var keep []types.HostAssignableHardwareBinding
	for _, b := range h.Config.AssignableHardwareBinding {
		if b.Vm != vm.Self {
			keep = append(keep, b)
		}
	}
	h.Config.AssignableHardwareBinding = keep
	for _, p := range gpulabPassthroughDevices(vm.Config.Hardware.Device) {
		if b, ok := p.Backing.(*types.VirtualPCIPassthroughDynamicBackingInfo); ok {
			b.AssignedId = ""
		}
	}
}

// PowerOnVMTask checks what a real host checks for passthrough VMs, then binds devices.
func (vm *VirtualMachine) PowerOnVMTask(ctx *Context, c *types.PowerOnVM_Task) soap.HasFault {
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		if f := gpulabPowerOnCheck(vm); f != nil {
			task := CreateTask(vm, "powerOn", func(*Task) (types.AnyType, types.BaseMethodFault) { return nil, f })
			return &methods.PowerOnVM_TaskBody{Res: &types.PowerOnVM_TaskResponse{Returnval: task.Run()}}
		}
	}
	res := vm.powerOnVMTaskOrig(ctx, c)
	if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
		gpulabBind(vm)
	}
	return res
}

// PowerOffVMTask releases the VM's passthrough devices.
func (vm *VirtualMachine) PowerOffVMTask(ctx *Context, c *types.PowerOffVM_Task) soap.HasFault {
	res := vm.powerOffVMTaskOrig(ctx, c)
	if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOff {
		gpulabUnbind(vm)
	}
	return res
}
