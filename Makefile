# iglubuild — developer entry points. Run as root on Debian 12.
PYTHON ?= python3
# The shared upstream tarballs: beside the project, or where the tests also look.
DISTFILES ?= $(firstword $(wildcard $(abspath ../shared/distfiles) /work/shared/distfiles))
MIRROR_ARGS = $(if $(wildcard $(DISTFILES)),--mirror file://$(DISTFILES),)
APT_PACKAGES = clang lld libclang-rt-14-dev debootstrap docker.io distcc \
	qemu-system-x86 ovmf systemd-boot-efi mtools dosfstools fdisk e2fsprogs \
	bmake zstd xz-utils bzip2 patch graphviz file curl make perl m4 llvm pkgconf libarchive-dev libssl-dev zlib1g-dev \
	chromium-headless-shell fonts-dejavu-core diffoscope-minimal iproute2

.PHONY: setup test test-fast lint bench world

setup:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
	$(PYTHON) -m pip install -q -e '.[test]'

test:
	bash tests/run.sh

test-fast:
	$(PYTHON) -m pytest -q -m 'not slow'

lint:
	$(PYTHON) -m ruff check iglubuild tests bench

bench:
	for b in bench/*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

# Everything buildable here, then the image (Iglunix's base, curl, zstd, iglupkg+xbps,
# and the repository, from which `iglu add` installs less inside),
# booted in QEMU through busybox init and Iglunix's init scripts, with commands
# run inside. Sources nobody could verify here are listed and left out.
GUEST_COMMANDS = ls /usr/bin | wc -l; mount | head -3; cat /etc/os-release; \
	curl --version; zstd --version; echo ok | sha256sum; xbps-query -l; \
	xbps-pkgdb -a && echo pkgdb-clean; echo y | iglu add less; less --version | head -1
world:
	$(PYTHON) -m iglubuild $(MIRROR_ARGS) world --keep-going --boot \
		--packages iglunix-base curl zstd iglupkg --with-repo \
		--kernel "$$(sh toolchain/debian-kernel.sh build/kernel)" --run '$(GUEST_COMMANDS)'

