// Command gpulab-vcsim serves the GPU lab's vSphere: VMware's govmomi simulator plus
// the extension compiled into package simulator (see ext/ and patches.json).
// The password is read from $GPU_LAB_VSPHERE_PASSWORD, never from the command line.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	cfg := simulator.GpuLabConfig{}
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	user := flag.String("username", "administrator@vsphere.local", "login user")
	caFile := flag.String("ca-file", "", "write the lab CA (PEM) here; empty: plain HTTP")
	flag.StringVar(&cfg.Datacenter, "datacenter", "gpu-dc", "datacenter name")
	flag.StringVar(&cfg.Cluster, "cluster", "gpu-cluster", "cluster name")
	flag.IntVar(&cfg.Hosts, "hosts", 8, "ESXi hosts in the cluster")
	flag.StringVar(&cfg.HostPrefix, "host-prefix", "esxi-", "host name prefix (suffix: index)")
	flag.IntVar(&cfg.GpusPerHost, "gpus-per-host", 2, "NVIDIA GPUs per host")
	flag.StringVar(&cfg.GpuModel, "gpu-model", "a100-80g", "GPU model: a100-80g, h100-pcie, l40s, a10")
	flag.IntVar(&cfg.VMs, "vms", -1, "worker VMs (default: one per host)")
	flag.StringVar(&cfg.VMPrefix, "vm-prefix", "ocp-worker-", "VM name prefix (suffix: index)")
	flag.IntVar(&cfg.VMMemoryMB, "vm-memory-mb", 65536, "VM memory")
	flag.IntVar(&cfg.VMCpus, "vm-cpus", 16, "VM vCPUs")
	flag.StringVar(&cfg.VMHwVersion, "vm-hw-version", "vmx-19", "VM hardware version")
	flag.BoolVar(&cfg.PowerOn, "power-on", true, "power the VMs on")
	flag.BoolVar(&cfg.ApplyNow, "apply-now", true, "hosts support passthrough changes without reboot")
	flag.IntVar(&cfg.RebootDelayMs, "reboot-delay-ms", 1000, "time a rebooting host stays notResponding")
	flag.IntVar(&cfg.DelayMs, "delay-ms", 0, "delay added to every SOAP call")
	flag.StringVar(&cfg.APIVersion, "api-version", "8.0.2.0", "advertised vSphere API version")
	flag.Parse()
	if cfg.VMs < 0 {
		cfg.VMs = cfg.Hosts
	}
	password := os.Getenv("GPU_LAB_VSPHERE_PASSWORD")
	if password == "" {
		log.Fatal("GPU_LAB_VSPHERE_PASSWORD is not set")
	}

	model, err := simulator.GpuLabCreate(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, password)}
	var thumbprint string
	if *caFile != "" {
		tlsConfig, tp, err := newLabTLS(*caFile)
		if err != nil {
			log.Fatal(err)
		}
		model.Service.TLS, thumbprint = tlsConfig, tp
	}
	model.Service.ServeMux = http.NewServeMux()
	model.Service.ServeMux.HandleFunc("/gpulab/faults", simulator.GpuLabFaultsHandler)
	server := model.Service.NewServer()
	defer server.Close()

	u := *server.URL
	u.User = nil
	ready, _ := json.Marshal(map[string]interface{}{
		"url": u.String(), "host": u.Hostname(), "port": u.Port(), "username": *user,
		"thumbprint": thumbprint, "pid": os.Getpid(),
	})
	fmt.Printf("READY %s\n", ready)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
