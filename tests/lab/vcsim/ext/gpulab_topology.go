// GPU lab extension: configuration and the reference-site topology.

package simulator

import (
	"context"
	"fmt"
	"path"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25/types"
)

// GpuLabConfig is the lab topology and behaviour.
type GpuLabConfig struct {
	Datacenter    string
	Cluster       string
	Hosts         int
	HostPrefix    string
	GpusPerHost   int
	GpuModel      string
	VMs           int
	VMPrefix      string
	VMMemoryMB    int
	VMCpus        int
	VMHwVersion   string
	PowerOn       bool
	ApplyNow      bool
	RebootDelayMs int
	DelayMs       int
	APIVersion    string
}

var gpulabConfig = GpuLabConfig{ApplyNow: true, RebootDelayMs: 1000}

func init() {
	// RHCOS workers report these guest ids; vcsim 0.24's list stops at rhel7.
	GuestID = append(GuestID, "rhel8_64Guest", "rhel9_64Guest")
}

// GpuLabCreate builds the lab: one datacenter, one cluster of hosts with GPUs and
// one worker VM per host (round-robin when VMs > hosts).
func GpuLabCreate(cfg GpuLabConfig) (*Model, error) {
	model, ok := GpuLabModels[cfg.GpuModel]
	if !ok {
		return nil, fmt.Errorf("unknown GPU model %q", cfg.GpuModel)
	}
	gpulabConfig = cfg
	m := VPX()
	m.ServiceContent.About.ApiVersion = cfg.APIVersion
	m.ServiceContent.About.Version = cfg.APIVersion[:5]
	m.Datacenter, m.Cluster, m.ClusterHost = 1, 1, cfg.Hosts
	m.Host, m.Machine, m.Portgroup, m.Datastore = 0, 0, 0, 1
	m.Autostart = false
	m.DelayConfig.Delay = cfg.DelayMs
	if err := m.Create(); err != nil {
		return nil, err
	}
	dc := Map.Any("Datacenter").(*Datacenter)
	dc.Name = cfg.Datacenter
	cluster := Map.Any("ClusterComputeResource").(*ClusterComputeResource)
	cluster.Name = cfg.Cluster
	var hosts []*HostSystem
	for i, ref := range cluster.Host {
		h := Map.Get(ref).(*HostSystem)
		name := fmt.Sprintf("%s%d", cfg.HostPrefix, i)
		h.Name, h.Summary.Config.Name = name, name
		gpulabEquipHost(h, model, cfg.GpusPerHost)
		hosts = append(hosts, h)
	}
	if err := gpulabCreateVMs(m, cfg, dc, cluster, hosts); err != nil {
		return nil, err
	}
	return m, nil
}

func gpulabCreateVMs(m *Model, cfg GpuLabConfig, dc *Datacenter, cluster *ClusterComputeResource, hosts []*HostSystem) error {
	ctx := context.Background()
	c := m.Service.client
	folder := object.NewFolder(c, dc.VmFolder)
	pool := object.NewResourcePool(c, *cluster.ResourcePool)
	for i := 0; i < cfg.VMs; i++ {
		name := fmt.Sprintf("%s%d", cfg.VMPrefix, i)
		host := object.NewHostSystem(c, hosts[i%len(hosts)].Self)
		spec := types.VirtualMachineConfigSpec{
			Name:             name,
			GuestId:          "rhel8_64Guest",
			NumCPUs:          int32(cfg.VMCpus),
			MemoryMB:         int64(cfg.VMMemoryMB),
			Firmware:         string(types.GuestOsDescriptorFirmwareTypeEfi),
			Version:          cfg.VMHwVersion,
			CpuHotAddEnabled: types.NewBool(false),
			Files:            &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
		}
		var devices object.VirtualDeviceList
		scsi, _ := devices.CreateSCSIController("pvscsi")
		disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
			spec.Files.VmPathName+" "+path.Join(name, "disk1.vmdk"))
		disk.CapacityInKB = 1024
		nic := esx.EthernetCard
		devices = append(devices, scsi, disk, &nic)
		spec.DeviceChange, _ = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
		task, err := folder.CreateVM(ctx, spec, pool, host)
		if err != nil {
			return err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return fmt.Errorf("create VM %s: %w", name, err)
		}
		if cfg.PowerOn {
			vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))
			if _, err := vm.PowerOn(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}
