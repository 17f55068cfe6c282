// The vCenter simulator the tests and bench/vm_discover.py talk to: govmomi's own simulator
// package (Debian's golang-github-vmware-govmomi-dev), started with the counts the flags give.
//
// One addition of ours: QueryPerf answers a flat 1 (0.01% CPU, 1 KB/s of disk and network)
// for every virtual machine whose annotation contains "vcsim:idle", so a test can make one
// VM look idle and leave the rest busy (the simulator's own series are per entity type, the
// same noisy numbers for every VM). Not 0: the simulator's XML encoder drops zero elements
// of a list, and an empty series reads as "no data".
//
// It prints one line of JSON with the SDK URL, then serves until SIGTERM or SIGINT.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const idleMark = "vcsim:idle"

// perfManager embeds the simulator's own by value: the property collector finds the managed
// object type by walking first fields, and a pointer there stops it.
type perfManager struct {
	simulator.PerformanceManager
}

func (p *perfManager) QueryPerf(ctx *simulator.Context, req *types.QueryPerf) soap.HasFault {
	res := p.PerformanceManager.QueryPerf(ctx, req)
	body, ok := res.(*methods.QueryPerfBody)
	if !ok || body.Res == nil {
		return res
	}
	for _, base := range body.Res.Returnval {
		metric, ok := base.(*types.PerfEntityMetric)
		if !ok || metric.Entity.Type != "VirtualMachine" {
			continue
		}
		vm, ok := ctx.Map.Get(metric.Entity).(*simulator.VirtualMachine)
		if !ok || vm.Config == nil || !strings.Contains(vm.Config.Annotation, idleMark) {
			continue
		}
		for _, series := range metric.Value {
			if s, ok := series.(*types.PerfMetricIntSeries); ok {
				for i := range s.Value {
					s.Value[i] = 1
				}
			}
		}
	}
	return body
}

func main() {
	datacenters := flag.Int("dc", 1, "datacenters")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	hosts := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 0, "standalone hosts per datacenter")
	vms := flag.Int("vm", 2, "virtual machines per resource pool (and per standalone host)")
	datastores := flag.Int("ds", 1, "datastores")
	user := flag.String("user", "", "user name; with a password, every other login is refused")
	password := flag.String("password", "", "password")
	esx := flag.Bool("esx", false, "simulate one ESXi host instead of a vCenter")
	flag.Parse()

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	}
	model.Datacenter = *datacenters
	model.Cluster = *clusters
	model.ClusterHost = *hosts
	model.Host = *standalone
	model.Machine = *vms
	model.Datastore = *datastores
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
	defer model.Remove()

	content := simulator.Map.Get(*model.ServiceContent.PerfManager)
	if pm, ok := content.(*simulator.PerformanceManager); ok {
		simulator.Map.Put(&perfManager{*pm})
	}

	listen := &url.URL{Scheme: "https", Host: "127.0.0.1:0"}
	if *user != "" {
		listen.User = url.UserPassword(*user, *password)
	}
	model.Service.Listen = listen
	model.Service.TLS = new(tls.Config)
	model.Service.RegisterEndpoints = true
	server := model.Service.NewServer()
	defer server.Close()

	sdk := *server.URL
	sdk.User = nil
	line, _ := json.Marshal(map[string]string{"url": sdk.String(), "host": sdk.Host})
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
