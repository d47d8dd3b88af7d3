// GPU lab extension, compiled into package simulator with `go build -overlay`.
// NVIDIA GPUs per host and a real per-host HostPciPassthruSystem.

package simulator

import (
	"fmt"
	"sort"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	gpulabNvidiaVendor  = int16(0x10de)
	gpulabClass3D       = int16(0x0302)
	gpulabNvidiaVendorN = "NVIDIA Corporation"
)

// GpuLabModel describes a simulated GPU model.
type GpuLabModel struct {
	DeviceName string
	DeviceID   int16
	MemoryGB   int
}

// GpuLabModels are the GPU models the lab can put into hosts.
var GpuLabModels = map[string]GpuLabModel{
	"a100-80g":  {"GA100 [A100 PCIe 80GB]", 0x20b5, 80},
	"h100-pcie": {"GH100 [H100 PCIe]", 0x2331, 80},
	"l40s":      {"AD102GL [L40S]", 0x26b9, 48},
	"a10":       {"GA102GL [A10]", 0x2236, 24},
}

var gpulabBuses = []byte{0x17, 0x31, 0x4b, 0x65, 0x98, 0xb1, 0xca, 0xe3}

// HostPciPassthruSystem is a per-host passthrough system (vcsim 0.24 has none).
type HostPciPassthruSystem struct {
	mo.HostPciPassthruSystem

	Host *HostSystem
}

// gpulabGpuMemoryGB returns the memory of an NVIDIA device id, 0 if unknown.
func gpulabGpuMemoryGB(deviceID int16) int {
	for _, m := range GpuLabModels {
		if m.DeviceID == deviceID {
			return m.MemoryGB
		}
	}
	return 0
}

// gpulabEquipHost adds `count` GPUs of `model` and a HostPciPassthruSystem to a host.
func gpulabEquipHost(h *HostSystem, model GpuLabModel, count int) {
	devices := append([]types.HostPciDevice(nil), h.Hardware.PciDevice...)
	var infos []types.BaseHostPciPassthruInfo
	for _, d := range devices {
		infos = append(infos, &types.HostPciPassthruInfo{Id: d.Id})
	}
	for i := 0; i < count; i++ {
		bus := byte(0x20 + i)
		if i < len(gpulabBuses) {
			bus = gpulabBuses[i]
		}
		dev := types.HostPciDevice{
			Id:          fmt.Sprintf("0000:%02x:00.0", bus),
			ClassId:     gpulabClass3D,
			Bus:         bus,
			VendorId:    gpulabNvidiaVendor,
			SubVendorId: gpulabNvidiaVendor,
			VendorName:  gpulabNvidiaVendorN,
			DeviceId:    model.DeviceID,
			SubDeviceId: 0x1533,
			DeviceName:  model.DeviceName,
		}
		devices = append(devices, dev)
		infos = append(infos, &types.HostPciPassthruInfo{Id: dev.Id, PassthruCapable: true})
	}
	h.Hardware.PciDevice = devices
	h.Config.PciPassthruInfo = infos

	h.Capability = &types.HostCapability{DeviceRebindWithoutRebootSupported: types.NewBool(gpulabConfig.ApplyNow)}
	ps := &HostPciPassthruSystem{Host: h}
	ps.PciPassthruInfo = infos
	ref := Map.Put(ps).Reference()
	h.ConfigManager.PciPassthruSystem = &ref
}

func gpulabPassthruInfo(h *HostSystem, id string) *types.HostPciPassthruInfo {
	for _, b := range h.Config.PciPassthruInfo {
		if info := b.GetHostPciPassthruInfo(); info.Id == id {
			return info
		}
	}
	return nil
}

func gpulabPciDevice(h *HostSystem, id string) *types.HostPciDevice {
	for i := range h.Hardware.PciDevice {
		if h.Hardware.PciDevice[i].Id == id {
			return &h.Hardware.PciDevice[i]
		}
	}
	return nil
}

// gpulabActivatePending makes passthruActive follow passthruEnabled (what a reboot does).
func gpulabActivatePending(h *HostSystem) {
	for _, b := range h.Config.PciPassthruInfo {
		info := b.GetHostPciPassthruInfo()
		info.PassthruActive = info.PassthruEnabled
	}
	gpulabPublishPassthru(h)
}

func gpulabPublishPassthru(h *HostSystem) {
	Map.Update(h, []types.PropertyChange{{Name: "config.pciPassthruInfo", Val: h.Config.PciPassthruInfo}})
	if h.ConfigManager.PciPassthruSystem == nil {
		return
	}
	if ps, ok := Map.Get(*h.ConfigManager.PciPassthruSystem).(*HostPciPassthruSystem); ok {
		ps.PciPassthruInfo = h.Config.PciPassthruInfo
	}
}

// gpulabDeviceBusy names the powered-on VM holding a device, "" when it is free.
func gpulabDeviceBusy(h *HostSystem, id string) string {
	for _, b := range h.Config.AssignableHardwareBinding {
		if b.InstanceId == id {
			if vm, ok := Map.Get(b.Vm).(*VirtualMachine); ok {
				return vm.Name
			}
		}
	}
	return ""
}

// UpdatePassthruConfig enables or disables passthrough per PCI id.
func (p *HostPciPassthruSystem) UpdatePassthruConfig(ctx *Context, req *types.UpdatePassthruConfig) soap.HasFault {
	body := new(methods.UpdatePassthruConfigBody)
	h := p.Host
	if h.Runtime.ConnectionState != types.HostSystemConnectionStateConnected {
		body.Fault_ = gpulabSoapFault(&types.HostNotConnected{},
			fmt.Sprintf("host %s is %s", h.Name, h.Runtime.ConnectionState))
		return body
	}
	// Validate everything first: a bad id changes nothing.
	for _, c := range req.Config {
		cfg := c.GetHostPciPassthruConfig()
		info := gpulabPassthruInfo(h, cfg.Id)
		if info == nil {
			body.Fault_ = gpulabSoapFault(&types.HostConfigFault{},
				fmt.Sprintf("PCI device %s not found on host %s", cfg.Id, h.Name))
			return body
		}
		if cfg.PassthruEnabled && !info.PassthruCapable {
			body.Fault_ = gpulabSoapFault(&types.HostConfigFault{},
				fmt.Sprintf("PCI device %s on host %s is not passthrough capable", cfg.Id, h.Name))
			return body
		}
		if !cfg.PassthruEnabled && info.PassthruActive {
			if vm := gpulabDeviceBusy(h, cfg.Id); vm != "" {
				body.Fault_ = gpulabSoapFault(&types.HostConfigFault{},
					fmt.Sprintf("PCI device %s on host %s is in use by VM %s", cfg.Id, h.Name, vm))
				return body
			}
		}
	}
	for _, c := range req.Config {
		cfg := c.GetHostPciPassthruConfig()
		info := gpulabPassthruInfo(h, cfg.Id)
		info.PassthruEnabled = cfg.PassthruEnabled
		// vSphere >= 7: unset or true applyNow takes effect at once when the host
		// supports device rebind without reboot; otherwise after the next reboot.
		if gpulabConfig.ApplyNow && (cfg.ApplyNow == nil || *cfg.ApplyNow) {
			info.PassthruActive = cfg.PassthruEnabled
		}
	}
	gpulabPublishPassthru(h)
	body.Res = new(types.UpdatePassthruConfigResponse)
	return body
}

// Refresh is a no-op: the lab's passthrough state is always current.
func (p *HostPciPassthruSystem) Refresh(req *types.Refresh) soap.HasFault {
	return &methods.RefreshBody{Res: new(types.RefreshResponse)}
}

// gpulabActiveGpus lists the passthrough-active NVIDIA devices of a host, sorted by id.
func gpulabActiveGpus(h *HostSystem) []types.HostPciDevice {
	var out []types.HostPciDevice
	for _, d := range h.Hardware.PciDevice {
		if d.VendorId != gpulabNvidiaVendor {
			continue
		}
		if info := gpulabPassthruInfo(h, d.Id); info != nil && info.PassthruActive {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}
