// GPU lab extension: fault injection and per-call hooks.
// POST /gpulab/faults   {"method": "ReconfigVM_Task", "fault": "NoDiskSpace", "target": "ocp-worker-3",
//                        "count": 1, "delay_ms": 0, "message": "...", "fields": {"datastore": "LocalDS_0"}}
//                       fault "" with delay_ms > 0 only delays; fault "NeverReconnect" on
//                       RebootHost_Task makes the host stay notResponding after the reboot;
//                       fault "LoseResponse" runs the method (the task is accepted and runs)
//                       and then drops the connection without an answer, as a lost response.
// GET /gpulab/faults    pending injections;  DELETE /gpulab/faults  clears them.

package simulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// GpuLabInjection is one queued fault or delay.
type GpuLabInjection struct {
	Method  string            `json:"method"`
	Fault   string            `json:"fault"`
	Target  string            `json:"target,omitempty"`
	Count   int               `json:"count"`
	DelayMs int               `json:"delay_ms,omitempty"`
	Message string            `json:"message,omitempty"`
	Fields  map[string]string `json:"fields,omitempty"`
	Fired   int               `json:"fired"`
}

var (
	gpulabMu         sync.Mutex
	gpulabInjections []*GpuLabInjection
	gpulabMessages   sync.Map // fault pointer -> message, for task errors
	gpulabNever      = map[string]bool{}
)

const (
	gpulabNeverReconnect = "NeverReconnect"
	gpulabLoseResponse   = "LoseResponse"
)

// gpulabFaultMessage is the localized message of a task fault (patched into task.go).
func gpulabFaultMessage(err types.BaseMethodFault) string {
	if msg, ok := gpulabMessages.Load(err); ok {
		return msg.(string)
	}
	return fmt.Sprintf("%T", err)
}

// gpulabFault remembers a message for a fault used as a task error.
func gpulabFault(f types.BaseMethodFault, msg string) types.BaseMethodFault {
	gpulabMessages.Store(f, msg)
	return f
}

func gpulabSoapFault(f types.BaseMethodFault, msg string) *soap.Fault {
	return Fault(msg, f)
}

// gpulabTargetName names the entity a call acts on (the host for a passthrough system).
func gpulabTargetName(ref types.ManagedObjectReference) string {
	switch obj := Map.Get(ref).(type) {
	case *HostPciPassthruSystem:
		return obj.Host.Name
	case *VirtualMachine:
		return obj.Name
	case *HostSystem:
		return obj.Name
	case *ClusterComputeResource:
		return obj.Name
	}
	return ""
}

// gpulabTake pops the first injection matching a call, nil if none.
func gpulabTake(method, target string) *GpuLabInjection {
	gpulabMu.Lock()
	defer gpulabMu.Unlock()
	for i, inj := range gpulabInjections {
		if inj.Method != method || (inj.Target != "" && inj.Target != target) {
			continue
		}
		inj.Fired++
		if inj.Fired >= inj.Count {
			gpulabInjections = append(gpulabInjections[:i], gpulabInjections[i+1:]...)
		}
		return inj
	}
	return nil
}

func gpulabNewFault(inj *GpuLabInjection, this types.ManagedObjectReference) (types.BaseMethodFault, error) {
	typ, ok := types.TypeFunc()(inj.Fault)
	if !ok {
		return nil, fmt.Errorf("unknown fault type %q", inj.Fault)
	}
	f, ok := reflect.New(typ).Interface().(types.BaseMethodFault)
	if !ok {
		return nil, fmt.Errorf("%q is not a fault type", inj.Fault)
	}
	gpulabFillFault(reflect.ValueOf(f).Elem(), this, inj.Fields)
	return f, nil
}

// gpulabFillFault sets empty object references to the call's object (pyvmomi
// rejects an empty one) and string fields named in `fields` (by xml name).
func gpulabFillFault(v reflect.Value, this types.ManagedObjectReference, fields map[string]string) {
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), v.Type().Field(i)
		if sf.Anonymous && f.Kind() == reflect.Struct {
			gpulabFillFault(f, this, fields)
			continue
		}
		name := strings.Split(sf.Tag.Get("xml"), ",")[0]
		switch {
		case f.Type() == reflect.TypeOf(types.ManagedObjectReference{}) && f.Interface() == types.ManagedObjectReference{}:
			f.Set(reflect.ValueOf(this))
		case f.Kind() == reflect.String && fields[name] != "":
			f.SetString(fields[name])
		}
	}
}

// gpulabTaskBodies answers a *_Task method with a task that fails.
var gpulabTaskBodies = map[string]func(types.ManagedObjectReference) soap.HasFault{
	"ReconfigVM_Task": func(r types.ManagedObjectReference) soap.HasFault {
		return &methods.ReconfigVM_TaskBody{Res: &types.ReconfigVM_TaskResponse{Returnval: r}}
	},
	"PowerOnVM_Task": func(r types.ManagedObjectReference) soap.HasFault {
		return &methods.PowerOnVM_TaskBody{Res: &types.PowerOnVM_TaskResponse{Returnval: r}}
	},
	"PowerOffVM_Task": func(r types.ManagedObjectReference) soap.HasFault {
		return &methods.PowerOffVM_TaskBody{Res: &types.PowerOffVM_TaskResponse{Returnval: r}}
	},
	"RebootHost_Task": func(r types.ManagedObjectReference) soap.HasFault {
		return &methods.RebootHost_TaskBody{Res: &types.RebootHost_TaskResponse{Returnval: r}}
	},
	"EnterMaintenanceMode_Task": func(r types.ManagedObjectReference) soap.HasFault {
		return &methods.EnterMaintenanceMode_TaskBody{Res: &types.EnterMaintenanceMode_TaskResponse{Returnval: r}}
	},
	"ExitMaintenanceMode_Task": func(r types.ManagedObjectReference) soap.HasFault {
		return &methods.ExitMaintenanceMode_TaskBody{Res: &types.ExitMaintenanceMode_TaskResponse{Returnval: r}}
	},
}

// call hooks every SOAP call (the original is renamed callOrig by the build).
func (s *Service) call(ctx *Context, method *Method) soap.HasFault {
	if ctx.Session == nil {
		return s.callOrig(ctx, method)
	}
	target := gpulabTargetName(method.This)
	inj := gpulabTake(method.Name, target)
	if inj == nil {
		return s.callOrig(ctx, method)
	}
	if inj.DelayMs > 0 {
		time.Sleep(time.Duration(inj.DelayMs) * time.Millisecond)
	}
	if inj.Fault == gpulabNeverReconnect {
		gpulabMu.Lock()
		gpulabNever[target] = true
		gpulabMu.Unlock()
		return s.callOrig(ctx, method)
	}
	if inj.Fault == "" {
		return s.callOrig(ctx, method)
	}
	if inj.Fault == gpulabLoseResponse {
		s.callOrig(ctx, method)
		// net/http closes the connection without writing a response.
		panic(http.ErrAbortHandler)
	}
	fault, err := gpulabNewFault(inj, method.This)
	if err != nil {
		return serverFault(err.Error())
	}
	msg := inj.Message
	if msg == "" {
		msg = fmt.Sprintf("injected %s on %s %s", inj.Fault, method.Name, target)
	}
	if body, ok := gpulabTaskBodies[method.Name]; ok {
		task := CreateTask(method.This, method.Name, func(*Task) (types.AnyType, types.BaseMethodFault) {
			return nil, gpulabFault(fault, msg)
		})
		return body(task.Run())
	}
	return &serverFaultBody{Reason: Fault(msg, fault)}
}

// GpuLabFaultsHandler serves /gpulab/faults.
func GpuLabFaultsHandler(w http.ResponseWriter, r *http.Request) {
	gpulabMu.Lock()
	defer gpulabMu.Unlock()
	switch r.Method {
	case http.MethodGet:
	case http.MethodDelete:
		gpulabInjections = nil
		gpulabNever = map[string]bool{}
	case http.MethodPost:
		var inj GpuLabInjection
		if err := json.NewDecoder(r.Body).Decode(&inj); err != nil || inj.Method == "" {
			http.Error(w, "body must be JSON with at least \"method\"", http.StatusBadRequest)
			return
		}
		if inj.Fault != "" && inj.Fault != gpulabNeverReconnect && inj.Fault != gpulabLoseResponse {
			if _, ok := types.TypeFunc()(inj.Fault); !ok {
				http.Error(w, "unknown fault type "+inj.Fault, http.StatusBadRequest)
				return
			}
		}
		if inj.Count <= 0 {
			inj.Count = 1
		}
		inj.Fired = 0
		gpulabInjections = append(gpulabInjections, &inj)
	default:
		http.Error(w, "GET, POST or DELETE", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	list := gpulabInjections
	if list == nil {
		list = []*GpuLabInjection{}
	}
	_ = json.NewEncoder(w).Encode(list)
}
