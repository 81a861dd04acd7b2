package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The merge rule of PUT /1.0/config on documents of every shape: an own
// option the upload omits is written into its section (created when
// missing), an option the upload sets wins, and options the other
// --config-file files give are not duplicated.
func TestMergeOwnOptions(t *testing.T) {
	running := Defaults()
	running.ServiceManager = "builtin"
	running.Namespace = "amp-test"
	kept := keptComment + "\nservice_manager = builtin\nnetwork_namespace = amp-test\n"
	for _, c := range []struct {
		name, upload, want string
		others             []Source
		wantKept           []string
	}{{
		name:     "section in the middle",
		upload:   "[DEFAULT]\ndebug = True\n\n[amphora_agent]\namphora_id = x\n\n[controller_worker]\nloadbalancer_topology = SINGLE\n",
		want:     "[DEFAULT]\ndebug = True\n\n[amphora_agent]\n" + kept + "amphora_id = x\n\n[controller_worker]\nloadbalancer_topology = SINGLE\n",
		wantKept: []string{"[amphora_agent] service_manager", "[amphora_agent] network_namespace"},
	}, {
		name:     "no section",
		upload:   "[DEFAULT]\ndebug = True",
		want:     "[DEFAULT]\ndebug = True\n\n[amphora_agent]\n" + kept,
		wantKept: []string{"[amphora_agent] service_manager", "[amphora_agent] network_namespace"},
	}, {
		name:     "header at the end without newline",
		upload:   "[DEFAULT]\ndebug = True\n[amphora_agent]  ",
		want:     "[DEFAULT]\ndebug = True\n[amphora_agent]  \n" + kept,
		wantKept: []string{"[amphora_agent] service_manager", "[amphora_agent] network_namespace"},
	}, {
		name:     "CRLF",
		upload:   "[amphora_agent]\r\namphora_id = x\r\n",
		want:     "[amphora_agent]\r\n" + kept + "amphora_id = x\r\n",
		wantKept: []string{"[amphora_agent] service_manager", "[amphora_agent] network_namespace"},
	}, {
		name:     "the upload's value wins",
		upload:   "[amphora_agent]\nservice-manager = systemd\n",
		want:     "[amphora_agent]\n" + keptComment + "\nnetwork_namespace = amp-test\nservice-manager = systemd\n",
		wantKept: []string{"[amphora_agent] network_namespace"},
	}, {
		name:   "another config file gives it",
		upload: "[amphora_agent]\namphora_id = x\n",
		others: []Source{{Name: "local.conf", Data: []byte("[amphora_agent]\nservice_manager = builtin\nnetwork_namespace = amp-test\n")}},
		want:   "[amphora_agent]\namphora_id = x\n",
	}, {
		name:     "a similar section name is not the section",
		upload:   "[amphora_agent_extra]\nx = 1\n",
		want:     "[amphora_agent_extra]\nx = 1\n\n[amphora_agent]\n" + kept,
		wantKept: []string{"[amphora_agent] service_manager", "[amphora_agent] network_namespace"},
	}} {
		t.Run(c.name, func(t *testing.T) {
			doc, gotKept, err := MergeOwnOptions([]byte(c.upload), running, c.others)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, string(doc)); diff != "" {
				t.Errorf("document (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.wantKept, gotKept); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
			srcs := append([]Source{{Name: "merged", Data: doc}}, c.others...)
			next, _, err := Parse(srcs...)
			if err != nil {
				t.Fatal(err)
			}
			wantSM := running.ServiceManager
			if strings.Contains(c.upload, "service-manager = systemd") {
				wantSM = "systemd"
			}
			if next.ServiceManager != wantSM || next.Namespace != running.Namespace {
				t.Errorf("the merged document reads service_manager %q, network_namespace %q", next.ServiceManager, next.Namespace)
			}
		})
	}
}
