// Prints the root CID that the IPFS JavaScript UnixFS importer gives a file:
// `v0` mirrors `ipfs add`, `v1` mirrors `ipfs add --cid-version=1` (raw leaves).
// Both use the importer's defaults otherwise: 262144-byte chunks, balanced layout,
// at most 174 links per node.
import { importer } from 'ipfs-unixfs-importer'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { readFileSync } from 'node:fs'

const [path, mode] = process.argv.slice(2)
const options = mode === 'v0'
  ? { cidVersion: 0, rawLeaves: false, reduceSingleLeafToSelf: true }
  : { cidVersion: 1, rawLeaves: true, reduceSingleLeafToSelf: true }
let root
for await (const entry of importer([{ content: readFileSync(path) }], new MemoryBlockstore(), options)) {
  root = entry
}
console.log(root.cid.toString())
