// GPU lab extension: host reboot and maintenance mode semantics.

package simulator

import (
	"fmt"
	"strings"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// gpulabRunningVMs names the powered-on VMs of a host.
func gpulabRunningVMs(h *HostSystem) []string {
	var names []string
	for _, ref := range h.Vm {
		if vm, ok := Map.Get(ref).(*VirtualMachine); ok &&
			vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			names = append(names, vm.Name)
		}
	}
	return names
}

func gpulabNotConnected(h *HostSystem) types.BaseMethodFault {
	if h.Runtime.ConnectionState == types.HostSystemConnectionStateConnected {
		return nil
	}
	return gpulabFault(&types.HostNotConnected{},
		fmt.Sprintf("host %s is %s", h.Name, h.Runtime.ConnectionState))
}

func gpulabSetConnection(h *HostSystem, state types.HostSystemConnectionState) {
	Map.Update(h, []types.PropertyChange{
		{Name: "runtime.connectionState", Val: state},
		{Name: "summary.runtime.connectionState", Val: state},
	})
}

// RebootHostTask reboots a host: refused outside maintenance mode unless forced;
// the host is notResponding for the reboot delay, then reconnects with pending
// passthrough changes active.
func (h *HostSystem) RebootHostTask(ctx *Context, req *types.RebootHost_Task) soap.HasFault {
	task := CreateTask(h, "rebootHost", func(t *Task) (types.AnyType, types.BaseMethodFault) {
		if f := gpulabNotConnected(h); f != nil {
			return nil, f
		}
		if !req.Force && !h.Runtime.InMaintenanceMode {
			return nil, gpulabFault(&types.InvalidState{},
				fmt.Sprintf("host %s is not in maintenance mode", h.Name))
		}
		if running := gpulabRunningVMs(h); len(running) > 0 {
			if !req.Force {
				return nil, gpulabFault(&types.InvalidState{},
					fmt.Sprintf("host %s has powered-on VMs: %s", h.Name, strings.Join(running, ", ")))
			}
			gpulabHardStopVMs(h)
		}
		gpulabSetConnection(h, types.HostSystemConnectionStateNotResponding)
		go gpulabFinishReboot(h)
		return nil, nil
	})
	return &methods.RebootHost_TaskBody{Res: &types.RebootHost_TaskResponse{Returnval: task.Run()}}
}

func gpulabHardStopVMs(h *HostSystem) {
	for _, ref := range h.Vm {
		if vm, ok := Map.Get(ref).(*VirtualMachine); ok {
			Map.WithLock(vm, func() {
				Map.Update(vm, []types.PropertyChange{
					{Name: "runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
					{Name: "summary.runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
				})
				gpulabUnbind(vm)
			})
		}
	}
}

func gpulabFinishReboot(h *HostSystem) {
	time.Sleep(time.Duration(gpulabConfig.RebootDelayMs) * time.Millisecond)
	for {
		gpulabMu.Lock()
		never := gpulabNever[h.Name]
		gpulabMu.Unlock()
		if !never {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	Map.WithLock(h, func() {
		now := time.Now()
		gpulabActivatePending(h)
		Map.Update(h, []types.PropertyChange{{Name: "runtime.bootTime", Val: &now}})
		gpulabSetConnection(h, types.HostSystemConnectionStateConnected)
	})
}

// EnterMaintenanceModeTask refuses hosts with powered-on VMs: passthrough VMs cannot
// be migrated, so a real vCenter would wait for them until the task times out.
func (h *HostSystem) EnterMaintenanceModeTask(ctx *Context, spec *types.EnterMaintenanceMode_Task) soap.HasFault {
	task := CreateTask(h, "enterMaintenanceMode", func(t *Task) (types.AnyType, types.BaseMethodFault) {
		if f := gpulabNotConnected(h); f != nil {
			return nil, f
		}
		if h.Runtime.InMaintenanceMode {
			return nil, gpulabFault(&types.InvalidState{},
				fmt.Sprintf("host %s is already in maintenance mode", h.Name))
		}
		if running := gpulabRunningVMs(h); len(running) > 0 {
			return nil, gpulabFault(&types.Timedout{}, fmt.Sprintf(
				"host %s cannot enter maintenance mode: powered-on VMs cannot be evacuated: %s",
				h.Name, strings.Join(running, ", ")))
		}
		Map.Update(h, []types.PropertyChange{{Name: "runtime.inMaintenanceMode", Val: true}})
		return nil, nil
	})
	return &methods.EnterMaintenanceMode_TaskBody{
		Res: &types.EnterMaintenanceMode_TaskResponse{Returnval: task.Run()},
	}
}

// ExitMaintenanceModeTask needs a connected host.
func (h *HostSystem) ExitMaintenanceModeTask(ctx *Context, spec *types.ExitMaintenanceMode_Task) soap.HasFault {
	task := CreateTask(h, "exitMaintenanceMode", func(t *Task) (types.AnyType, types.BaseMethodFault) {
		if f := gpulabNotConnected(h); f != nil {
			return nil, f
		}
		if !h.Runtime.InMaintenanceMode {
			return nil, gpulabFault(&types.InvalidState{},
				fmt.Sprintf("host %s is not in maintenance mode", h.Name))
		}
		Map.Update(h, []types.PropertyChange{{Name: "runtime.inMaintenanceMode", Val: false}})
		return nil, nil
	})
	return &methods.ExitMaintenanceMode_TaskBody{
		Res: &types.ExitMaintenanceMode_TaskResponse{Returnval: task.Run()},
	}
}
